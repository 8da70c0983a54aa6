"""Throwaway: how precisely can an MLP read the hand xyz off frozen latents (held-out episodes)?"""
import sys, time
import numpy as np, torch
from jepa_robot.data import open_dataset
from jepa_robot.latent_cache import load_latent_cache
torch.set_num_threads(1); torch.manual_seed(0)
ds_path, cache = sys.argv[1], sys.argv[2]
epochs = int(sys.argv[3]) if len(sys.argv) > 3 else 20
dataset, spec = open_dataset(ds_path)
lat = np.asarray(load_latent_cache(cache).latents, dtype=np.float32)
cols = dataset.hf_dataset.with_format("numpy")
ep = np.asarray(cols["episode_index"]); state = np.asarray(cols["observation.state"], np.float32)
x = torch.from_numpy(lat.reshape(len(lat), -1)); y = torch.from_numpy(state[:, :4].copy())
train = torch.from_numpy(ep % 10 != 0)
mu, sd = x[train].mean(0), x[train].std(0) + 1e-5
ym, ys = y[train].mean(0), y[train].std(0)
x = (x - mu) / sd; yn = (y - ym) / ys
net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], 512), torch.nn.GELU(), torch.nn.Dropout(0.1),
                          torch.nn.Linear(512, 512), torch.nn.GELU(), torch.nn.Linear(512, 4))
opt = torch.optim.AdamW(net.parameters(), 1e-3, weight_decay=0.05)
xt, yt = x[train], yn[train]; xv, yv = x[~train], y[~train]
steps = epochs * (len(xt) // 256); sched = torch.optim.lr_scheduler.OneCycleLR(opt, 1e-3, total_steps=steps)
t0 = time.time(); s = 0
for e in range(epochs):
    net.train(); perm = torch.randperm(len(xt))
    for i in range(0, len(xt) - 255, 256):
        b = perm[i:i + 256]
        loss = torch.nn.functional.smooth_l1_loss(net(xt[b]), yt[b], beta=0.1)
        opt.zero_grad(); loss.backward(); opt.step(); sched.step(); s += 1
    net.eval()
    with torch.no_grad():
        p = net(xv) * ys + ym
    rmse = ((p - yv) ** 2).mean(0).sqrt(); err3 = (p[:, :3] - yv[:, :3]).norm(dim=1)
    print(f"epoch {e} {time.time()-t0:.0f}s hand rmse cm {100*rmse[:3].numpy().round(4)} "
          f"3D median {100*err3.median():.2f} p90 {100*err3.quantile(0.9):.2f} grip {rmse[3]:.3f}", flush=True)
torch.save({"net": net.state_dict(), "mu": mu, "sd": sd, "ym": ym, "ys": ys}, "/tmp/s8/mlp_probe.pt")
