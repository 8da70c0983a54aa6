"""Throwaway: plan with the predictor's state head against an MLP readout of the goal latent."""
import json, os, sys
from dataclasses import dataclass
import numpy as np, torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from jepa_robot.config import EvalConfig
from jepa_robot.evaluation import ModelRunner, goal_frames
from jepa_robot.agent import run_episode
from planners.energy import GoalDistance
torch.set_num_threads(1)
task = sys.argv[1]; seeds = [int(s) for s in sys.argv[2].split(",")]; out_path = sys.argv[3]
overrides = sys.argv[4:]
subgoals = os.environ.get("SUBGOALS") == "1"
with initialize_config_dir(config_dir="/work/main/configs", version_base=None):
    c = compose("eval", overrides=["checkpoint=default", "planner=default_model", *overrides])
config = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(EvalConfig), c))
runner = ModelRunner(config.checkpoint, config.planner, config.agent, subgoals, None)
wm = runner.world_model
ck = torch.load(os.environ.get("READOUT", "/tmp/s8/mlp_probe.pt"))
net = torch.nn.Sequential(torch.nn.Linear(3072, 512), torch.nn.GELU(), torch.nn.Dropout(0.1),
                          torch.nn.Linear(512, 512), torch.nn.GELU(), torch.nn.Linear(512, 4))
net.load_state_dict(ck["net"]); net.eval()
def readout(lat):  # [..., 16, 192] -> raw state [..., 4]
    x = (lat.flatten(-2) - ck["mu"]) / ck["sd"]
    with torch.no_grad():
        return net(x) * ck["ys"] + ck["ym"]
GRIP = float(os.environ.get("GRIP", "0.0")); MIX = float(os.environ.get("MIX", "0"))
stash = {}
orig = wm.predictor.rollout
def rollout(*a, **k):
    lat, st = orig(*a, **k)
    stash["s"] = st * wm._state_std + wm._state_mean; stash["lat"] = lat
    return lat, st
wm.predictor.rollout = rollout
@dataclass(frozen=True)
class StateDist(GoalDistance):
    def per_step(self, predicted, goal):
        g = readout(goal)
        if g.dim() == 2: g = g[:, None]
        if os.environ.get("READ_PRED") != "1" and (predicted.shape[1] > 1 or ("lat" in stash and stash["lat"].shape[0] == predicted.shape[0] and predicted.shape[0] > 1)):
            p = stash["s"]
        else:  # the agent's distance of the observed frame to the goal (sub-goal switching)
            p = readout(predicted)
        d = 100 * (p[..., :3] - g[..., :3]).norm(dim=-1) + GRIP * (p[..., 3] - g[..., 3]).abs()
        if MIX:
            goal_b = goal if goal.dim() == predicted.dim() - 2 else goal.unsqueeze(1)
            d = d + MIX * (predicted - goal_b).abs().flatten(2).mean(-1)
        return d
runner.agent.planner.energy = StateDist(steps="all")
out = []
for seed in seeds:
    env = runner.env(task); cam = wm.camera
    goals, obs, goal = goal_frames(env, seed, cam, subgoals)
    gl = wm.encode(np.stack(goals)); gr = readout(gl)
    runner.agent.reset(goals)
    trace = []
    def on_step(step, o, a, info):
        trace.append(env.privileged_obs[:7].tolist() + [runner.agent.goal_index] + a.tolist())
    res = run_episode(env, runner.agent, obs, {"reach": 100, "push": 150, "pick-place": 200}[task], on_step=on_step)
    hand = env.privileged_obs[:3]; gs = goal.goal_state
    out.append(dict(seed=seed, success=res.success, final=res.final_goal_distance_m,
                    min=res.min_goal_distance_m, readout=gr.tolist(), final_hand=hand.tolist(), goal_state=gs.tolist(), readout_err_cm=float(100*np.linalg.norm(gr[-1,:3].numpy()-gs[:3])), hand_to_goal_cm=float(100*np.linalg.norm(hand-gs[:3])),
                    trace=trace, plan_ms=float(np.mean([r.seconds for r in res.replans]) * 1000)))
    print(seed, res.success, round(res.final_goal_distance_m * 100, 1), round(res.min_goal_distance_m * 100, 1),
          "readout err cm", round(out[-1]["readout_err_cm"], 2), "hand to goal-frame hand cm", round(out[-1]["hand_to_goal_cm"], 2), flush=True)
json.dump(out, open(out_path, "w"))
print("success", sum(o["success"] for o in out), "/", len(out))
