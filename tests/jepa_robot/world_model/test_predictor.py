"""Tests for jepa_robot.world_model.predictor: the block-causal action-conditioned predictor."""

from __future__ import annotations

import io
import json
import math

import pytest
import torch
import torch.nn.functional as F

from jepa_robot.world_model.predictor import (
    ACPredictor,
    PredictorConfig,
    apply_rope,
    block_causal_mask,
    rope_angles,
    rope_axis_dim,
    rope_tables,
    rotate_pairs,
)

D, N, A, S = 32, 16, 4, 3
CONTEXTS, CANDIDATES, HORIZON = 2, 3, 4


def tiny_config(**overrides) -> PredictorConfig:
    kwargs = dict(latent_dim=D, num_tokens=N, action_dim=A, state_dim=S, hidden_dim=64,
                  depth=2, heads=4, max_steps=8)
    kwargs.update(overrides)
    return PredictorConfig(**kwargs)


def make_model(seed: int = 0, **overrides) -> ACPredictor:
    torch.manual_seed(seed)
    return ACPredictor(tiny_config(**overrides))


def normed(*shape: int, generator: torch.Generator | None = None) -> torch.Tensor:
    return F.layer_norm(torch.randn(*shape, generator=generator), (shape[-1],))


def sequence(batch: int = 2, steps: int = 5, state_dim: int = S, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    latents = normed(batch, steps, N, D, generator=g)
    actions = torch.randn(batch, steps, A, generator=g)
    states = torch.randn(batch, steps, state_dim, generator=g) if state_dim else None
    return latents, actions, states


def rollout_inputs(context_len: int, state_dim: int = S, seed: int = 2):
    """Bc=2 contexts of C steps; B=6 candidates (3 per context) whose first C-1 actions
    are their context's past actions."""
    g = torch.Generator().manual_seed(seed)
    context_latents = normed(CONTEXTS, context_len, N, D, generator=g)
    context_states = (torch.randn(CONTEXTS, context_len, state_dim, generator=g)
                      if state_dim else None)
    past = torch.randn(CONTEXTS, context_len - 1, A, generator=g)
    candidate = torch.randn(CONTEXTS * CANDIDATES, HORIZON, A, generator=g)
    actions = torch.cat((past.repeat_interleave(CANDIDATES, 0), candidate), dim=1)
    return context_latents, context_states, actions


def integrate(state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
    """Toy kinematics: the first S action dims move the state."""
    return state + 0.1 * action[:, : state.shape[1]]


# ----------------------------------------------------------------------------- config


def test_config_roundtrip_through_json():
    config = tiny_config(mlp_ratio=2, predict_state=False)
    d = config.to_dict()
    assert d["grid"] == 4  # resolved from num_tokens=16
    assert isinstance(d["mlp_ratio"], float)
    again = PredictorConfig.from_dict(json.loads(json.dumps(d)))
    assert again == config
    assert again.to_dict() == d
    assert config.tokens_per_step == 1 + 1 + N
    assert tiny_config(state_dim=0).tokens_per_step == 1 + N


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(num_tokens=15), r"num_tokens=15 over 1 view\(s\) is 15 tokens per view, not a perfect square"),
        (dict(num_tokens=15, views=2), r"num_tokens=15 is not a multiple of views=2"),
        (dict(num_tokens=32, views=2, grid=2), r"grid=2 does not match num_tokens=32 over 2 view"),
        (dict(num_tokens=16, grid=3), r"grid=3 does not match num_tokens=16"),
        (dict(hidden_dim=66, heads=4), r"hidden_dim=66 is not divisible by heads=4"),
        (dict(hidden_dim=20, heads=4), r"head width .* 5 is too small"),
        (dict(state_dim=-1), r"state_dim must be >= 0, got -1"),
        (dict(action_dim=0), r"action_dim must be >= 1, got 0"),
        (dict(depth=2.0), r"depth must be an int, got 2.0"),
        (dict(max_steps=True), r"max_steps must be an int"),
        (dict(predict_state="yes"), r"predict_state must be a bool"),
        (dict(mlp_ratio=0.0), r"mlp_ratio must be > 0"),
    ],
)
def test_config_validation(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**overrides)


def test_config_from_dict_rejects_unknown_and_missing_keys():
    d = tiny_config().to_dict()
    with pytest.raises(ValueError, match=r"unknown keys \['hiden_dim'\]"):
        PredictorConfig.from_dict({**d, "hiden_dim": 8})
    del d["action_dim"]
    with pytest.raises(ValueError, match=r"missing required keys \['action_dim'\]"):
        PredictorConfig.from_dict(d)


def test_non_square_grid_needs_explicit_match_and_explicit_grid_works():
    config = tiny_config(num_tokens=64, grid=8)
    assert config.grid == 8
    model = ACPredictor(config)
    latents = normed(1, 2, 64, D)
    pred, _ = model(latents, torch.randn(1, 2, A), torch.randn(1, 2, S))
    assert pred.shape == (1, 2, 64, D)


# ----------------------------------------------------------------------------- forward


@pytest.mark.parametrize(
    ("state_dim", "predict_state"), [(S, True), (S, False), (0, True)]
)
def test_forward_shapes_and_layer_normed_outputs(state_dim, predict_state):
    model = make_model(state_dim=state_dim, predict_state=predict_state)
    latents, actions, states = sequence(state_dim=state_dim)
    pred, pred_states = model(latents, actions, states)
    assert pred.shape == latents.shape
    assert torch.isfinite(pred).all()
    mean, std = pred.mean(-1), pred.std(-1, unbiased=False)
    assert mean.abs().max() < 1e-5
    assert (std - 1).abs().max() < 1e-3
    if state_dim and predict_state:
        assert pred_states is not None and pred_states.shape == states.shape
    else:
        assert pred_states is None
    # the state head exists only when it can be used
    assert (model.state_head is not None) == (state_dim > 0 and predict_state)
    assert (model.state_encoder is not None) == (state_dim > 0)


@pytest.mark.parametrize("changed", ["frame", "action", "state"])
@pytest.mark.parametrize("step", [0, 2, 4])
def test_block_causality(changed, step):
    model = make_model()
    latents, actions, states = sequence(steps=5)
    pred, pred_states = model(latents, actions, states)
    latents2, actions2, states2 = latents.clone(), actions.clone(), states.clone()
    if changed == "frame":
        latents2[:, step] = normed(2, N, D)
    elif changed == "action":
        actions2[:, step] += 1.0
    else:
        states2[:, step] += 1.0
    pred2, pred_states2 = model(latents2, actions2, states2)
    # earlier steps are untouched ...
    assert torch.allclose(pred[:, :step], pred2[:, :step], atol=1e-6, rtol=0)
    assert torch.allclose(pred_states[:, :step], pred_states2[:, :step], atol=1e-6, rtol=0)
    # ... and the changed step's prediction moves
    assert (pred[:, step] - pred2[:, step]).abs().max() > 1e-3
    assert (pred_states[:, step] - pred_states2[:, step]).abs().max() > 1e-5


def test_block_causal_mask_layout():
    mask = block_causal_mask(3, 2)
    expected = torch.tensor([[1, 1, 0, 0, 0, 0],
                             [1, 1, 0, 0, 0, 0],
                             [1, 1, 1, 1, 0, 0],
                             [1, 1, 1, 1, 0, 0],
                             [1, 1, 1, 1, 1, 1],
                             [1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    assert torch.equal(mask, expected)
    # two new blocks after one cached block: the last rows of the full 3-block mask
    assert torch.equal(block_causal_mask(2, 2, past_blocks=1), expected[2:, :])
    assert block_causal_mask(1, 5, past_blocks=3) is None


def test_forward_input_errors():
    model = make_model()
    latents, actions, states = sequence(steps=3)
    with pytest.raises(ValueError, match=r"actions must have A=4 features, got 7"):
        model(latents, torch.randn(2, 3, 7), states)
    with pytest.raises(ValueError, match=r"states must have S=3 features, got 2"):
        model(latents, actions, torch.randn(2, 3, 2))
    with pytest.raises(ValueError, match=r"states is required \(S=3\)"):
        model(latents, actions, None)
    with pytest.raises(ValueError, match=r"N=16 tokens of D=32 features, got N=16, D=8"):
        model(latents[..., :8], actions, states)
    with pytest.raises(ValueError, match=r"3 steps to match"):
        model(latents, actions[:, :2], states)
    long_latents, long_actions, long_states = sequence(steps=9)
    with pytest.raises(ValueError, match=r"9 time steps, more than max_steps=8"):
        model(long_latents, long_actions, long_states)
    stateless = make_model(state_dim=0)
    with pytest.raises(ValueError, match=r"state_dim=0"):
        stateless(latents, actions, states)


def test_gradients_reach_every_parameter():
    model = make_model()
    # 3 x 3 (odd) compared states: the L1 gradient of the state head's bias, a sum of
    # signs, cannot cancel to exactly zero
    latents, actions, states = sequence(batch=3, steps=4)
    pred, pred_states = model(latents, actions, states)
    loss = F.l1_loss(pred[:, :-1], latents[:, 1:]) + F.l1_loss(pred_states[:, :-1], states[:, 1:])
    loss.backward()
    names = [name for name, _ in model.named_parameters()]
    assert len(names) == 6 + 12 * 2 + 2 + 2 + 2  # embeds(3x2) + blocks + norm + proj + head
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name


def test_state_dict_roundtrip_and_reference_names(tmp_path):
    model = make_model(seed=0)
    state = model.state_dict()
    # names follow facebookresearch/vjepa2's VisionTransformerPredictorAC; RoPE tables
    # are buffers rebuilt from the config, not saved
    for key in ("predictor_embed.weight", "action_encoder.weight", "state_encoder.weight",
                "predictor_blocks.0.norm1.weight", "predictor_blocks.0.attn.qkv.weight",
                "predictor_blocks.0.attn.qkv.bias", "predictor_blocks.1.attn.proj.weight",
                "predictor_blocks.1.norm2.bias", "predictor_blocks.1.mlp.fc1.weight",
                "predictor_blocks.1.mlp.fc2.bias", "predictor_norm.weight",
                "predictor_proj.weight", "state_head.weight"):
        assert key in state, key
    assert not any("rope" in key for key in state)
    assert state["predictor_blocks.0.attn.qkv.weight"].shape == (3 * 64, 64)

    path = tmp_path / "predictor.pt"
    torch.save({"config": model.config.to_dict(), "state_dict": state}, path)
    saved = torch.load(path, weights_only=True)
    other = ACPredictor(PredictorConfig.from_dict(saved["config"]))
    latents, actions, states = sequence()
    before = other(latents, actions, states)[0]
    assert not torch.equal(before, model(latents, actions, states)[0])  # fresh init differs
    other.load_state_dict(saved["state_dict"])
    for a, b in zip(model(latents, actions, states), other(latents, actions, states), strict=True):
        assert torch.equal(a, b)


def test_initialisation():
    model = make_model(depth=3)
    assert model.predictor_embed.bias.abs().max() == 0
    assert model.predictor_blocks[0].attn.qkv.bias.abs().max() == 0
    w = model.predictor_embed.weight
    assert w.abs().max() <= 2 * 0.02 + 1e-7
    assert 0.01 < w.std() < 0.02
    # residual projections shrink with depth: divided by sqrt(2 * layer)
    std = [b.mlp.fc2.weight.std().item() for b in model.predictor_blocks]
    assert std[0] > std[1] > std[2]
    assert std[2] / std[0] == pytest.approx(1 / math.sqrt(3), rel=0.15)


# ----------------------------------------------------------------------------- RoPE


def test_rope_fast_path_equals_reference_formula_and_is_relative():
    head_dim = 16
    assert rope_axis_dim(head_dim) == 4  # 3 axes x 4 channels, 4 left unrotated
    positions = torch.tensor([[0.0, 0, 0], [1, 2, 3], [3, 1, 0], [5, 3, 3]])
    x = torch.randn(2, 3, len(positions), head_dim)
    cos, sin = rope_tables(positions, head_dim)
    angles = rope_angles(positions, head_dim)
    fast = rotate_pairs(x, angles.cos(), angles.sin())
    assert torch.allclose(fast, apply_rope(x, cos, sin), atol=1e-6)
    assert torch.allclose(fast[..., 12:], x[..., 12:])  # remainder untouched
    assert torch.allclose(fast[..., 0, :], x[..., 0, :], atol=1e-7)  # position 0: identity
    assert torch.allclose(fast.norm(dim=-1), x.norm(dim=-1), atol=1e-5)  # a rotation

    # scores depend only on the position difference
    q, k = torch.randn(head_dim), torch.randn(head_dim)

    def score(pq, pk):
        pos = torch.tensor([pq, pk], dtype=torch.float)
        ang = rope_angles(pos, head_dim)
        qr = rotate_pairs(q.expand(2, -1), ang.cos(), ang.sin())
        return (qr[0] * rotate_pairs(k.expand(2, -1), ang.cos(), ang.sin())[1]).sum()

    assert score([3, 1, 2], [1, 0, 0]) == pytest.approx(score([7, 4, 5], [5, 3, 3]).item(),
                                                        abs=1e-4)
    assert score([3, 1, 2], [1, 0, 0]) != pytest.approx(score([3, 1, 2], [2, 0, 0]).item(),
                                                        abs=1e-3)


def test_rope_reference_quirk_tables():
    head_dim = 64
    d = rope_axis_dim(head_dim)
    assert d == 20
    positions = torch.tensor([[2.0, 5, 7]])
    cos_q, _ = rope_tables(positions, head_dim, reference_quirk=True)
    cos_p, _ = rope_tables(positions, head_dim)
    omega = 10000 ** (-torch.arange(d // 2, dtype=torch.float64) / (d // 2))
    for axis, pos in enumerate((2.0, 5.0, 7.0)):
        chunk = slice(axis * d, (axis + 1) * d)
        expected = torch.cos(pos * omega)
        assert torch.allclose(cos_q[0, chunk], expected.repeat(2).float(), atol=1e-6)
        assert torch.allclose(cos_p[0, chunk], expected.repeat_interleave(2).float(), atol=1e-6)
    assert torch.all(cos_q[0, 3 * d :] == 1)


def test_action_and_state_tokens_rotate_in_time_only():
    model = make_model()
    k_per_step = model.config.tokens_per_step
    positions = model._token_positions(3)
    assert positions.shape == (3 * k_per_step, 3)
    block1 = positions[k_per_step : 2 * k_per_step]
    assert torch.all(block1[:, 0] == 1)
    assert torch.all(block1[:2, 1:] == 0)  # action, state: no spatial position
    assert block1[2:, 1:].tolist()[:5] == [[0, 0], [0, 1], [0, 2], [0, 3], [1, 0]]
    assert block1[-1, 1:].tolist() == [3, 3]


def test_views_stack_as_one_tall_image():
    """Two views of 2x2 tokens: the second view's rows follow the first's, so every token has
    its own (row, col); the weights are those of a one-view predictor of the same widths."""
    two = make_model(num_tokens=8, views=2)
    assert two.config.grid == 2
    k_per_step = two.config.tokens_per_step
    frame = two._token_positions(2)[k_per_step + 2: 2 * k_per_step, 1:].tolist()
    assert frame == [[0, 0], [0, 1], [1, 0], [1, 1], [2, 0], [2, 1], [3, 0], [3, 1]]
    one = make_model(num_tokens=4)
    assert {k: v.shape for k, v in two.state_dict().items()} == {k: v.shape for k, v in one.state_dict().items()}
    latents, actions, states = sequence()
    predicted, _ = two(latents[:, :, :8], actions, states)
    assert predicted.shape == (2, 5, 8, D)
    with pytest.raises(ValueError, match="N=8 tokens"):
        two(latents, actions, states)


def test_residual_latents_predict_the_change():
    """With residual_latents the output is LN(z_t + proj(.)): zeroing the projection
    makes the predictor copy each frame (up to the layer norm, a no-op on normed input);
    without it the same predictor outputs a constant, whatever the frame."""
    latents, actions, states = sequence()
    for residual in (True, False):
        model = make_model(residual_latents=residual)
        with torch.no_grad():
            model.predictor_proj.weight.zero_()
            model.predictor_proj.bias.zero_()
            predicted, _ = model(latents, actions, states)
        if residual:
            assert torch.allclose(predicted, latents, atol=1e-4)
        else:
            assert predicted.abs().max() < 1e-3  # LN of zeros
    # configs saved before the field existed load with it off
    stored = tiny_config().to_dict()
    stored.pop("residual_latents")
    assert PredictorConfig.from_dict(stored).residual_latents is False
    with pytest.raises(ValueError, match="residual_latents"):
        tiny_config(residual_latents="yes")


# ----------------------------------------------------------------------------- rollout


@pytest.mark.parametrize("residual", [False, True], ids=["latents", "residual_latents"])
@pytest.mark.parametrize("context_len", [1, 3])
@pytest.mark.parametrize("grad", [False, True], ids=["no_grad_buffer", "grad_concat"])
def test_rollout_cache_matches_recompute(context_len, grad, residual):
    model = make_model(residual_latents=residual)
    context_latents, context_states, actions = rollout_inputs(context_len)
    with torch.set_grad_enabled(grad):
        cached, cached_states = model.rollout(context_latents, context_states, actions)
        full, full_states = model.rollout_recompute(context_latents, context_states, actions)
    batch = CONTEXTS * CANDIDATES
    assert cached.shape == (batch, HORIZON, N, D)
    assert cached_states.shape == (batch, HORIZON, S)
    assert (cached - full).abs().max() < 1e-5
    assert (cached_states - full_states).abs().max() < 1e-5
    assert (cached.mean(-1)).abs().max() < 1e-5  # fed-back predictions are layer-normed
    # candidates of one context differ (their actions do)
    assert (cached[0] - cached[1]).abs().max() > 1e-4


@pytest.mark.parametrize(("context_len", "horizon"), [(1, 1), (1, 2), (2, 1), (2, 2)])
def test_rollout_short_horizons(context_len, horizon):
    """Edge cases of the cache: nothing to cache (C = H = 1), only a shared prefix, ..."""
    model = make_model()
    context_latents, context_states, actions = rollout_inputs(context_len)
    actions = actions[:, : context_len - 1 + horizon]
    with torch.no_grad():
        cached, cached_states = model.rollout(context_latents, context_states, actions)
        full, full_states = model.rollout_recompute(context_latents, context_states, actions)
    assert cached.shape == (CONTEXTS * CANDIDATES, horizon, N, D)
    assert (cached - full).abs().max() < 1e-5
    assert (cached_states - full_states).abs().max() < 1e-5


@pytest.mark.parametrize("context_len", [1, 3])
def test_first_rollout_step_equals_forward(context_len):
    model = make_model()
    context_latents, context_states, actions = rollout_inputs(context_len)
    with torch.no_grad():
        pred, pred_states = model.rollout(context_latents, context_states, actions)
        group_of = torch.arange(CONTEXTS * CANDIDATES) // CANDIDATES
        ref, ref_states = model(context_latents[group_of], actions[:, :context_len],
                                context_states[group_of])
    assert (pred[:, 0] - ref[:, context_len - 1]).abs().max() < 1e-5
    assert (pred_states[:, 0] - ref_states[:, context_len - 1]).abs().max() < 1e-5


def test_rollout_is_differentiable_in_the_actions():
    model = make_model()
    context_latents, context_states, actions = rollout_inputs(3)
    actions.requires_grad_(True)
    pred, pred_states = model.rollout(context_latents, context_states, actions)
    (pred[:, -1].abs().mean() + pred_states[:, -1].square().mean()).backward()
    grad = actions.grad
    assert grad is not None and torch.isfinite(grad).all()
    assert grad[:, 2:].abs().sum(-1).min() > 0  # every candidate action matters


@pytest.mark.parametrize("context_len", [1, 3])
def test_next_state_fn_without_state_head(context_len):
    model = make_model(predict_state=False)
    context_latents, context_states, actions = rollout_inputs(context_len)
    with torch.no_grad():
        pred, pred_states = model.rollout(context_latents, context_states, actions, integrate)
        full, full_states = model.rollout_recompute(context_latents, context_states, actions,
                                                    integrate)
    expected = context_states[:, -1].repeat_interleave(CANDIDATES, 0)
    for h in range(HORIZON):
        expected = integrate(expected, actions[:, context_len - 1 + h])
        assert torch.allclose(pred_states[:, h], expected, atol=1e-6)
    assert (pred - full).abs().max() < 1e-5
    assert torch.allclose(pred_states, full_states)
    with pytest.raises(ValueError, match=r"no state head .* no next_state_fn"):
        model.rollout(context_latents, context_states, actions)
    with pytest.raises(ValueError, match=r"no state head .* no next_state_fn"):
        model.rollout_recompute(context_latents, context_states, actions)


def test_next_state_fn_takes_precedence_over_state_head():
    model = make_model()
    context_latents, context_states, actions = rollout_inputs(2)
    with torch.no_grad():
        _, head_states = model.rollout(context_latents, context_states, actions)
        _, fn_states = model.rollout(context_latents, context_states, actions, integrate)
    first = integrate(context_states[:, -1].repeat_interleave(CANDIDATES, 0), actions[:, 1])
    assert torch.allclose(fn_states[:, 0], first)
    assert not torch.allclose(head_states[:, 0], first)


def test_next_state_fn_bad_output_is_reported():
    model = make_model(predict_state=False)
    context_latents, context_states, actions = rollout_inputs(1)
    with pytest.raises(ValueError, match=r"next_state_fn must return a tensor of shape \(6, 3\)"):
        model.rollout(context_latents, context_states, actions, lambda s, a: a)


def test_rollout_without_state_token():
    model = make_model(state_dim=0)
    context_latents, context_states, actions = rollout_inputs(2, state_dim=0)
    assert context_states is None
    with torch.no_grad():
        pred, pred_states = model.rollout(context_latents, None, actions)
        full, _ = model.rollout_recompute(context_latents, None, actions)
    assert pred_states is None
    assert pred.shape == (CONTEXTS * CANDIDATES, HORIZON, N, D)
    assert (pred - full).abs().max() < 1e-5
    with pytest.raises(ValueError, match=r"state_dim=0"):
        model.rollout(context_latents, torch.zeros(CONTEXTS, 2, S), actions)


def test_rollout_input_errors():
    model = make_model()
    context_latents, context_states, actions = rollout_inputs(3)
    with pytest.raises(ValueError, match=r"batch 5, which is not a multiple of the 2 contexts"):
        model.rollout(context_latents, context_states, actions[:5])
    bad = actions.clone()
    bad[1, 0] += 1.0  # second candidate of context 0 claims another past action
    with pytest.raises(ValueError, match=r"past actions\) differ between candidates"):
        model.rollout(context_latents, context_states, bad)
    with pytest.raises(ValueError, match=r"at least one candidate action, got 2 steps"):
        model.rollout(context_latents, context_states, actions[:, :2])
    with pytest.raises(ValueError, match=r"actions must be \[B, C - 1 \+ H, A=4\]"):
        model.rollout(context_latents, context_states, actions[..., :2])
    # C - 1 + H = 9 actions: the blocks 0 .. C+H-2 are 9 > max_steps=8
    long_actions = torch.cat([actions, actions[:, -1:].expand(-1, 3, -1)], dim=1)
    with pytest.raises(ValueError, match=r"9 time steps, more than max_steps=8"):
        model.rollout(context_latents, context_states, long_actions)
    with pytest.raises(ValueError, match=r"9 time steps, more than max_steps=8"):
        model.rollout_recompute(context_latents, context_states, long_actions)
    # 8 blocks (predicting z_3 .. z_8) still fit
    model.rollout(context_latents, context_states, long_actions[:, :8])
    with pytest.raises(ValueError, match=r"context_states is required"):
        model.rollout(context_latents, None, actions)


def test_rollout_float64_agrees_tightly():
    model = make_model().double()
    context_latents, context_states, actions = (t.double() for t in rollout_inputs(3))
    with torch.no_grad():
        cached, cached_states = model.rollout(context_latents, context_states, actions)
        full, full_states = model.rollout_recompute(context_latents, context_states, actions)
    assert cached.dtype == torch.float64
    assert (cached - full).abs().max() < 1e-10
    assert (cached_states - full_states).abs().max() < 1e-10


def test_forward_serialises_through_bytes():
    """A model rebuilt from a config dict plus a state_dict in memory predicts the same."""
    model = make_model(seed=3, state_dim=0)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    clone = ACPredictor(PredictorConfig.from_dict(model.config.to_dict()))
    clone.load_state_dict(torch.load(buffer, weights_only=True))
    latents, actions, _ = sequence(state_dim=0)
    assert torch.equal(model(latents, actions)[0], clone(latents, actions)[0])


@pytest.mark.parametrize("grad", [False, True], ids=["no_grad_buffer", "grad_concat"])
def test_rollout_under_bf16_autocast(grad):
    """Training runs under torch.autocast(bfloat16): RoPE (complex, in float32) and the
    cache must cope with bf16 queries/keys and stay close to the float32 result."""
    model = make_model()
    context_latents, context_states, actions = rollout_inputs(3)
    with torch.no_grad():
        reference, reference_states = model.rollout(context_latents, context_states, actions)
    with torch.set_grad_enabled(grad), torch.autocast("cpu", dtype=torch.bfloat16):
        cached, cached_states = model.rollout(context_latents, context_states, actions)
        full, _ = model.rollout_recompute(context_latents, context_states, actions)
    assert torch.isfinite(cached.float()).all()
    assert (cached.float() - reference).abs().max() < 0.25
    assert (cached.float() - full.float()).abs().max() < 0.25
    assert (cached_states.float() - reference_states).abs().max() < 0.05
