"""Action-conditioned latent predictor (V-JEPA 2-AC style).

The world model's dynamics: given the frame latents ``z_0 .. z_t`` of a trajectory,
the actions ``a_0 .. a_t`` and (optionally) proprioceptive states ``s_0 .. s_t``, it
predicts ``z_{t+1}`` (and ``s_{t+1}``).

Layout (kept close to Meta's ``VisionTransformerPredictorAC`` in facebookresearch/vjepa2,
``src/models/ac_predictor.py``, so that a later converter can load its weights):

* every time step is a block of ``K = 1 + (state_dim > 0) + num_tokens`` tokens,
  ``[action token, state token, frame tokens]``; with several camera views the frame
  tokens are each view's patch tokens in turn (``views`` of them, ``grid x grid`` each); the input projections are
  ``action_encoder`` (A -> hidden), ``state_encoder`` (S -> hidden) and
  ``predictor_embed`` (D -> hidden);
* ``predictor_blocks``: pre-norm transformer blocks (``norm1``, ``attn.qkv`` fused with
  bias, ``attn.proj``, ``norm2``, ``mlp.fc1`` - GELU - ``mlp.fc2``), LayerNorm eps 1e-6,
  no dropout;
* block-causal attention: every token of block ``t`` sees every token of blocks
  ``<= t`` (so a step's own action and state are visible to its frame tokens);
* ``predictor_norm`` then ``predictor_proj`` (hidden -> D) on the frame tokens, followed
  by a weightless layer norm over D, because V-JEPA 2-AC layer-normalises targets and
  every predictor output (also the predictions it feeds back during rollouts);
* ``state_head`` (ours, not in the reference): Linear(hidden -> S) on the normed output
  of the state token, predicting the *change* of state, ``s_{t+1} = s_t + head(.)``.

Positions are rotary (RoPE) inside attention, as in the reference's
``ACRoPEAttention``: the head dimension is split into three equal even parts of
``2 * ((head_dim // 3) // 2)`` channels (time, row, column), any remainder is left
unrotated; frame tokens rotate by ``(t, row, col)``, action and state tokens only by
``t`` (their spatial positions are 0, i.e. no rotation, exactly like the reference,
which rotates only their time channels). Several views sit one below the other, as one
tall image: view ``v``'s rows are ``v * grid .. v * grid + grid - 1``, so every token
has its own position and no parameter is added (one view is exactly the layout above). Frequencies per part of width ``d`` are
``10000 ** (-i / (d / 2))``, ``i < d / 2``, and channel pairs ``(2i, 2i+1)`` rotate
together.

Differences from the reference, for whoever writes the weight converter:

* the reference duplicates the frequency vector by ``repeat`` instead of
  ``repeat_interleave`` (its ``rotate_queries_or_keys``; vjepa2 PR #15), so pair ``i``
  mixes two different frequencies (not a rotation any more). Its published weights
  were trained with that quirk: ``PredictorConfig(rope_reference_quirk=True)`` makes
  the predictor apply it (full-width tables from :func:`rope_tables` with
  ``reference_quirk=True``, applied by :func:`apply_rope`), which is what
  :mod:`jepa_robot.world_model.vjepa2_ac` sets for Meta's checkpoint. The default (False) is the
  proper rotation, for models trained here;
* the reference's ``state_encoder`` is Linear(action_dim -> hidden) (both 7 on DROID),
  ours is Linear(state_dim -> hidden); its unused ``extrinsics_encoder`` is absent;
* the reference returns ``predictor_proj``'s output and leaves the layer norm to the
  training loop; here ``forward`` already returns layer-normed predictions;
* spatial positions are not rescaled to a reference grid (the reference multiplies
  row/col by ``grid_size / H``, which is 1 for its 16x16 grid).

Initialisation follows the reference: truncated normal (std 0.02) Linear weights, zero
biases, unit LayerNorms, and each block's ``attn.proj`` / ``mlp.fc2`` weights divided
by ``sqrt(2 * layer_index)``.

Planning uses :meth:`ACPredictor.rollout`, which keeps a key/value cache: the context
blocks that do not depend on the candidate actions (blocks ``0 .. C-2``) run once per
context, their keys/values are repeated for the candidates, and each predicted step
adds one block that attends to the cache. :meth:`ACPredictor.rollout_recompute` is the
cache-free reference (what Meta's released planner does: rerun the predictor on the
whole growing sequence at each step).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from jepa_robot.world_model.architecture import PredictorArchitecture, check_int

__all__ = [
    "ACPredictor",
    "NextStateFn",
    "PredictorConfig",
    "apply_rope",
    "block_causal_mask",
    "rope_angles",
    "rope_axis_dim",
    "rope_tables",
    "rotate_pairs",
]

NextStateFn = Callable[[Tensor, Tensor], Tensor]
"""``next_state_fn(state [B, S], action [B, A]) -> next state [B, S]``."""

ROPE_BASE = 10000.0
LAYER_NORM_EPS = 1e-6  # the reference's blocks and final norm (vit_ac_predictor)
INIT_STD = 0.02


# ----------------------------------------------------------------------------- config


@dataclass(kw_only=True)
class PredictorConfig(PredictorArchitecture):
    """Everything needed to rebuild an :class:`ACPredictor` (stored in checkpoints): the
    architecture and the widths of what it reads."""

    latent_dim: int
    """Encoder token width D (192 tiny, 1024 ViT-L, 1408 ViT-g)."""
    num_tokens: int
    """Frame tokens per time step N, every view's together (64 for one 8x8 grid, 256 for
    16x16, 32 for two views of 4x4)."""
    action_dim: int
    """Action width A (4 for Meta-World, 7 for DROID)."""
    state_dim: int
    """Proprioceptive state width S; 0 means no state token."""
    max_steps: int = 32
    """Longest sequence of time steps (context + predicted) the model accepts."""
    grid: int | None = None
    """Each view's tokens form a grid x grid image; None means isqrt(num_tokens / views)
    (then resolved)."""
    views: int = 1
    """Camera views per time step; their tokens follow one another (``grid * grid`` each).
    Configs saved before this field existed load with 1."""
    rope_reference_quirk: bool = False
    """Apply RoPE with facebookresearch/vjepa2's frequency duplication (``repeat`` instead
    of ``repeat_interleave``), as Meta's published V-JEPA 2-AC weights need; False is the
    proper rotation. Configs saved before this field existed load with False."""

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("latent_dim", "num_tokens", "action_dim", "max_steps", "views"):
            check_int(name, getattr(self, name), minimum=1)
        check_int("state_dim", self.state_dim, minimum=0)
        if not isinstance(self.rope_reference_quirk, bool):
            raise ValueError(f"PredictorConfig.rope_reference_quirk must be a bool, got {self.rope_reference_quirk!r}")
        if self.num_tokens % self.views:
            raise ValueError(f"PredictorConfig.num_tokens={self.num_tokens} is not a multiple of "
                             f"views={self.views} (every view has the same number of tokens)")
        per_view = self.num_tokens // self.views
        if self.grid is None:
            side = math.isqrt(per_view)
            if side * side != per_view:
                raise ValueError(
                    f"PredictorConfig.num_tokens={self.num_tokens} over {self.views} view(s) is "
                    f"{per_view} tokens per view, not a perfect square; each view's tokens must "
                    "form a grid x grid image (set grid explicitly only if views * grid * grid == "
                    "num_tokens)"
                )
            self.grid = side
        else:
            check_int("grid", self.grid, minimum=1)
            if self.grid * self.grid != per_view:
                raise ValueError(
                    f"PredictorConfig.grid={self.grid} does not match num_tokens="
                    f"{self.num_tokens} over {self.views} view(s) (need views * grid * grid == num_tokens)"
                )

    # derived quantities (never written back into the stored fields)
    @property
    def tokens_per_step(self) -> int:
        """K: action token + state token (if any) + frame tokens."""
        return self.num_conditioning_tokens + self.num_tokens

    @property
    def num_conditioning_tokens(self) -> int:
        """Tokens before the frame tokens in each block (action, then state if any)."""
        return 1 + (self.state_dim > 0)

    @property
    def head_dim(self) -> int:
        return self.hidden_dim // self.heads

    @property
    def has_state_head(self) -> bool:
        return self.predict_state and self.state_dim > 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PredictorConfig:
        if not isinstance(d, Mapping):
            raise ValueError(f"PredictorConfig.from_dict expects a mapping, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(
                f"PredictorConfig.from_dict: unknown keys {unknown}; valid keys: {sorted(known)}"
            )
        missing = [n for n in ("latent_dim", "num_tokens", "action_dim", "state_dim")
                   if n not in d]
        if missing:
            raise ValueError(f"PredictorConfig.from_dict: missing required keys {missing}")
        return cls(**dict(d))


# ----------------------------------------------------------------------------- RoPE


def rope_axis_dim(head_dim: int) -> int:
    """Channels per RoPE axis (time, row, col): ``2 * ((head_dim // 3) // 2)``, as in the
    reference; the ``head_dim - 3 * rope_axis_dim`` last channels are not rotated."""
    return 2 * ((head_dim // 3) // 2)


def rope_angles(positions: Tensor, head_dim: int, base: float = ROPE_BASE) -> Tensor:
    """Rotation angle of every channel pair: ``[L, head_dim // 2]`` for 3D positions
    ``[L, 3]`` (time, row, col).

    Pair layout: ``[time | row | col | unrotated]`` with ``rope_axis_dim(head_dim) / 2``
    pairs per axis; pair ``i`` of an axis rotates by ``pos * base ** (-i / (d / 2))``
    (d = the axis' channel count); unrotated pairs get angle 0.
    """
    positions = positions.to(torch.float64)
    half = rope_axis_dim(head_dim) // 2
    omega = base ** (-torch.arange(half, dtype=torch.float64) / half)  # [d/2]
    parts = [positions[:, axis : axis + 1] * omega for axis in range(3)]
    parts.append(positions.new_zeros(positions.shape[0], head_dim // 2 - 3 * half))
    return torch.cat(parts, dim=1)


def rope_tables(
    positions: Tensor, head_dim: int, base: float = ROPE_BASE, reference_quirk: bool = False
) -> tuple[Tensor, Tensor]:
    """Full-width cos/sin tables ``[L, head_dim]`` for :func:`apply_rope`.

    With ``reference_quirk=False`` both channels of pair ``i`` use the angle of
    :func:`rope_angles` (a proper rotation; what the predictor computes, faster, with
    :func:`rotate_pairs`). With ``reference_quirk=True`` each axis' frequency vector is
    tiled (``[w0..w_{d/2-1}, w0..w_{d/2-1}]``) instead of interleaved, reproducing
    facebookresearch/vjepa2's ``rotate_queries_or_keys``, which the published
    V-JEPA 2-AC weights were trained with (``PredictorConfig.rope_reference_quirk``).
    """
    half = rope_axis_dim(head_dim) // 2
    angles = rope_angles(positions, head_dim, base)
    if reference_quirk:
        axes = [angles[:, a * half : (a + 1) * half].repeat(1, 2) for a in range(3)]
        rest = angles[:, 3 * half :].repeat_interleave(2, dim=1)
        full = torch.cat([*axes, rest], dim=1)
    else:
        full = angles.repeat_interleave(2, dim=1)
    return full.cos().float(), full.sin().float()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Reference formula: ``x [..., L, head_dim]`` -> ``x * cos + (-x_{2i+1}, x_{2i}) * sin``
    with full-width tables from :func:`rope_tables`."""
    pairs = x.unflatten(-1, (-1, 2))
    swapped = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
    return x * cos.to(x.dtype) + swapped * sin.to(x.dtype)


def rotate_pairs(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate channel pairs ``(2i, 2i+1)`` of ``x [..., L, head_dim]`` by the angles whose
    cos/sin are ``[L, head_dim // 2]`` (one complex multiplication; equals
    :func:`apply_rope` with non-quirk tables). Computed in float32 for half types."""
    work = x if x.dtype in (torch.float32, torch.float64) else x.float()
    pairs = work.unflatten(-1, (-1, 2))
    if pairs.stride(-1) != 1 or any(st % 2 for st in pairs.stride()[:-1]):
        pairs = pairs.contiguous()
    rotation = torch.complex(cos.to(work.dtype), sin.to(work.dtype))
    rotated = torch.view_as_real(torch.view_as_complex(pairs) * rotation).flatten(-2)
    return rotated.to(x.dtype)


def block_causal_mask(
    num_new_blocks: int, tokens_per_block: int, past_blocks: int = 0, device=None
) -> Tensor | None:
    """Boolean attention mask ``[new tokens, past + new tokens]`` (True = may attend):
    a query in block ``t`` sees every key in blocks ``<= t``. ``None`` when a single new
    block attends to everything before it (no masking needed)."""
    if num_new_blocks == 1:
        return None
    query_block = torch.arange(num_new_blocks * tokens_per_block, device=device)
    query_block = past_blocks + query_block // tokens_per_block
    key_block = torch.arange((past_blocks + num_new_blocks) * tokens_per_block, device=device)
    key_block = key_block // tokens_per_block
    return key_block[None, :] <= query_block[:, None]


# ----------------------------------------------------------------------------- blocks

KeyValue = tuple[Tensor, Tensor]


class KVBuffer:
    """Preallocated keys/values ``[batch, heads, capacity, head_dim]`` of one layer,
    filled in place, so a rollout step does not copy the whole cache. Allocated on the
    first append (taking the dtype/device of the keys). Not autograd-safe (in-place
    writes): :meth:`ACPredictor.rollout` uses it only when gradients are disabled."""

    def __init__(self, batch: int, capacity: int):
        self.batch, self.capacity, self.length = batch, capacity, 0
        self.keys: Tensor | None = None
        self.values: Tensor | None = None

    def append(self, keys: Tensor, values: Tensor, group: int = 1) -> KeyValue:
        """Add ``[batch // group, heads, n, head_dim]`` keys/values (each row repeated
        for ``group`` consecutive rows); returns all keys/values so far."""
        if self.keys is None or self.values is None:
            shape = (self.batch, keys.shape[1], self.capacity, keys.shape[3])
            self.keys, self.values = keys.new_empty(shape), values.new_empty(shape)
        end = self.length + keys.shape[2]
        if end > self.capacity:
            raise RuntimeError(f"KVBuffer overflow: {end} tokens > capacity {self.capacity}")
        for buffer, new in ((self.keys, keys), (self.values, values)):
            target = buffer[:, :, self.length : end]
            if group > 1:
                target.unflatten(0, (-1, group)).copy_(new.unsqueeze(1))
            else:
                target.copy_(new)
        self.length = end
        return self.keys[:, :, :end], self.values[:, :, :end]

    def contents(self) -> KeyValue | None:
        """Keys/values stored so far (views), or None if empty."""
        if self.keys is None or self.values is None or self.length == 0:
            return None
        return self.keys[:, :, : self.length], self.values[:, :, : self.length]


class Attention(nn.Module):
    """Multi-head self-attention with fused qkv, RoPE on queries/keys and an optional
    cache of earlier tokens' keys/values (already rotated): a ``(keys, values)`` tuple
    (concatenated, autograd-safe) or a :class:`KVBuffer` (filled in place).

    ``full_tables``: the cos/sin tables are full width ``[L, head_dim]`` and applied
    with :func:`apply_rope` (the reference quirk); otherwise they are per pair
    ``[L, head_dim // 2]`` and applied with :func:`rotate_pairs`."""

    def __init__(self, dim: int, heads: int, full_tables: bool = False):
        super().__init__()
        self.heads = heads
        self.full_tables = full_tables
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)
        self.proj = nn.Linear(dim, dim, bias=True)

    def forward(
        self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor | None,
        past: KeyValue | KVBuffer | None,
    ) -> tuple[Tensor, KeyValue | KVBuffer]:
        batch, length, dim = x.shape
        qkv = self.qkv(x).unflatten(-1, (3, self.heads, -1)).permute(2, 0, 3, 1, 4)
        rope = apply_rope if self.full_tables else rotate_pairs
        q, k = rope(qkv[:2], cos, sin).unbind(0)  # [B, heads, L, head_dim]
        v = qkv[2]
        cache: KeyValue | KVBuffer
        if isinstance(past, KVBuffer):
            k, v = past.append(k, v)
            cache = past
        else:
            if past is not None:
                k = torch.cat((past[0], k), dim=2)
                v = torch.cat((past[1], v), dim=2)
            cache = (k, v)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        y = y.transpose(1, 2).reshape(batch, length, dim)
        return self.proj(y), cache


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block (names match the reference's ``ACBlock``)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, full_tables: bool = False):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.attn = Attention(dim, heads, full_tables)
        self.norm2 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.mlp = MLP(dim, int(dim * mlp_ratio))

    def forward(
        self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor | None,
        past: KeyValue | KVBuffer | None,
    ) -> tuple[Tensor, KeyValue | KVBuffer]:
        y, kv = self.attn(self.norm1(x), cos, sin, mask, past)
        x = x + y
        x = x + self.mlp(self.norm2(x))
        return x, kv


# ----------------------------------------------------------------------------- model


class ACPredictor(nn.Module):
    """Block-causal action-conditioned predictor; see the module docstring."""

    def __init__(self, config: PredictorConfig):
        super().__init__()
        if not isinstance(config, PredictorConfig):
            raise TypeError(f"ACPredictor expects a PredictorConfig, got {type(config).__name__}")
        self.config = config
        c = config
        self.predictor_embed = nn.Linear(c.latent_dim, c.hidden_dim)
        self.action_encoder = nn.Linear(c.action_dim, c.hidden_dim)
        self.state_encoder = nn.Linear(c.state_dim, c.hidden_dim) if c.state_dim > 0 else None
        self.predictor_blocks = nn.ModuleList(
            Block(c.hidden_dim, c.heads, c.mlp_ratio, c.rope_reference_quirk)
            for _ in range(c.depth)
        )
        self.predictor_norm = nn.LayerNorm(c.hidden_dim, eps=LAYER_NORM_EPS)
        self.predictor_proj = nn.Linear(c.hidden_dim, c.latent_dim)
        self.state_head = nn.Linear(c.hidden_dim, c.state_dim) if c.has_state_head else None

        # RoPE tables for every token position up to max_steps blocks (not in state_dict):
        # per channel pair, or full width with the reference's frequency duplication.
        positions = self._token_positions(c.max_steps)
        if c.rope_reference_quirk:
            cos, sin = rope_tables(positions, c.head_dim, reference_quirk=True)
        else:
            angles = rope_angles(positions, c.head_dim)
            cos, sin = angles.cos().float(), angles.sin().float()
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

        self.apply(self._init_weights)
        for layer_index, block in enumerate(self.predictor_blocks, start=1):
            with torch.no_grad():
                block.attn.proj.weight.div_(math.sqrt(2.0 * layer_index))
                block.mlp.fc2.weight.div_(math.sqrt(2.0 * layer_index))

    def _token_positions(self, steps: int) -> Tensor:
        """(time, row, col) of every token of ``steps`` blocks: ``[steps * K, 3]``."""
        c = self.config
        rows = torch.arange(c.num_tokens) // c.grid  # view v's rows follow view v - 1's
        cols = torch.arange(c.num_tokens) % c.grid
        spatial = torch.cat(
            (torch.zeros(c.num_conditioning_tokens, 2, dtype=torch.long),
             torch.stack((rows, cols), dim=1))
        )  # [K, 2]; action/state tokens sit at (0, 0): only time rotates them
        time = torch.arange(steps).repeat_interleave(c.tokens_per_step)[:, None]
        return torch.cat((time, spatial.repeat(steps, 1)), dim=1).float()

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=INIT_STD, a=-2 * INIT_STD, b=2 * INIT_STD)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    # ------------------------------------------------------------------ internals

    def _embed(self, latents: Tensor, actions: Tensor, states: Tensor | None) -> Tensor:
        """[B, T, N, D], [B, T, A], [B, T, S] -> tokens [B, T * K, hidden]."""
        parts = [self.action_encoder(actions).unsqueeze(2)]
        if self.state_encoder is not None:
            parts.append(self.state_encoder(states).unsqueeze(2))
        parts.append(self.predictor_embed(latents))
        tokens = torch.cat(parts, dim=2)
        return tokens.flatten(1, 2)

    def _run_blocks(
        self, tokens: Tensor, start_step: int, past: list[KeyValue] | list[KVBuffer] | None,
        keep_cache: bool,
    ) -> tuple[Tensor, list | None]:
        """Run blocks ``start_step ..`` (tokens ``[B, n * K, hidden]``) through the
        transformer, attending to ``past`` (keys/values of blocks ``< start_step``)."""
        k_per_step = self.config.tokens_per_step
        new_steps = tokens.shape[1] // k_per_step
        first, last = start_step * k_per_step, (start_step + new_steps) * k_per_step
        cos, sin = self.rope_cos[first:last], self.rope_sin[first:last]
        mask = block_causal_mask(new_steps, k_per_step, start_step, device=tokens.device)
        if past is not None and not keep_cache:
            # nothing will attend to these blocks later: attend to the buffers' contents
            # without writing the new keys/values into them
            past = [p.contents() if isinstance(p, KVBuffer) else p for p in past]
        cache: list = []
        x = tokens
        for layer, block in enumerate(self.predictor_blocks):
            x, kv = block(x, cos, sin, mask, None if past is None else past[layer])
            if keep_cache:
                cache.append(kv)
        return x, (cache if keep_cache else None)

    def _readout(self, x: Tensor, latents: Tensor, states: Tensor | None
                 ) -> tuple[Tensor, Tensor | None]:
        """Transformer output [B, T, K, hidden] and the input latents of those steps
        [B, T, N, D] -> (layer-normed next latents [B, T, N, D], next states [B, T, S]
        from the state head, or None if there is no head or ``states`` is None)."""
        c = self.config
        frames = self.predictor_proj(self.predictor_norm(x[:, :, c.num_conditioning_tokens :]))
        if c.residual_latents:
            frames = latents + frames
        frames = F.layer_norm(frames, (c.latent_dim,))
        next_states = None
        if self.state_head is not None and states is not None:
            state_out = self.predictor_norm(x[:, :, 1])
            next_states = states + self.state_head(state_out)
        return frames, next_states

    def _check_steps(self, steps: int, what: str) -> None:
        if steps > self.config.max_steps:
            raise ValueError(
                f"{what} spans {steps} time steps, more than max_steps="
                f"{self.config.max_steps} of this predictor"
            )

    def _check_frames(self, latents: Tensor, name: str) -> None:
        c = self.config
        if latents.dim() != 4:
            raise ValueError(
                f"{name} must be [batch, steps, N={c.num_tokens}, D={c.latent_dim}], got shape "
                f"{tuple(latents.shape)}"
            )
        if latents.shape[2] != c.num_tokens or latents.shape[3] != c.latent_dim:
            raise ValueError(
                f"{name} must have N={c.num_tokens} tokens of D={c.latent_dim} features, got "
                f"N={latents.shape[2]}, D={latents.shape[3]} (shape {tuple(latents.shape)})"
            )

    def _check_vectors(
        self, tensor: Tensor | None, name: str, batch: int | None, steps: int, width: int,
        width_name: str,
    ) -> None:
        if tensor is None:
            raise ValueError(f"{name} is required ({width_name}={width}) but got None")
        if tensor.dim() != 3:
            raise ValueError(
                f"{name} must be [batch, steps, {width_name}={width}], got shape "
                f"{tuple(tensor.shape)}"
            )
        if tensor.shape[2] != width:
            raise ValueError(
                f"{name} must have {width_name}={width} features, got {tensor.shape[2]} "
                f"(shape {tuple(tensor.shape)})"
            )
        if (batch is not None and tensor.shape[0] != batch) or tensor.shape[1] != steps:
            raise ValueError(
                f"{name} must have batch {batch} and {steps} steps to match the latents, got "
                f"shape {tuple(tensor.shape)}"
            )

    def _check_no_states(self, states: Tensor | None, name: str) -> None:
        if states is not None:
            raise ValueError(
                f"{name} was given but this predictor has state_dim=0 (no state token); pass None"
            )

    # ------------------------------------------------------------------ public API

    def forward(
        self, latents: Tensor, actions: Tensor, states: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """Teacher forcing over a whole sequence.

        latents ``[B, T, N, D]`` (layer-normed frame tokens z_0..z_{T-1}), actions
        ``[B, T, A]`` (a_t is taken after frame t), states ``[B, T, S]`` (None iff
        ``state_dim == 0``). Returns ``(pred_latents [B, T, N, D], pred_states [B, T, S]
        or None)``; index t predicts z_{t+1} / s_{t+1} from blocks <= t, so a loss compares
        ``pred[:, :-1]`` with ``latents[:, 1:]``. Predicted latents are layer-normed over D.
        ``pred_states`` is None unless the config has a state head.
        """
        c = self.config
        self._check_frames(latents, "latents")
        batch, steps = latents.shape[:2]
        self._check_steps(steps, "latents")
        self._check_vectors(actions, "actions", batch, steps, c.action_dim, "A")
        if c.state_dim > 0:
            self._check_vectors(states, "states", batch, steps, c.state_dim, "S")
        else:
            self._check_no_states(states, "states")
        tokens = self._embed(latents, actions, states)
        x, _ = self._run_blocks(tokens, start_step=0, past=None, keep_cache=False)
        return self._readout(x.view(batch, steps, c.tokens_per_step, -1), latents, states)

    def _check_rollout(
        self,
        context_latents: Tensor,
        context_states: Tensor | None,
        actions: Tensor,
        next_state_fn: NextStateFn | None,
    ) -> tuple[int, int, int, int]:
        """Validate rollout inputs; returns (contexts Bc, context length C, candidates B,
        horizon H)."""
        c = self.config
        self._check_frames(context_latents, "context_latents")
        contexts, context_len = context_latents.shape[:2]
        if context_len < 1:
            raise ValueError("context_latents must hold at least one time step")
        if c.state_dim > 0:
            self._check_vectors(context_states, "context_states", contexts, context_len,
                                c.state_dim, "S")
            if next_state_fn is None and not c.has_state_head:
                raise ValueError(
                    f"rollout needs the next states (state_dim={c.state_dim}) but this predictor "
                    "has no state head (predict_state=False) and no next_state_fn was given"
                )
        else:
            self._check_no_states(context_states, "context_states")
        if actions.dim() != 3 or actions.shape[2] != c.action_dim:
            raise ValueError(
                f"actions must be [B, C - 1 + H, A={c.action_dim}], got shape "
                f"{tuple(actions.shape)}"
            )
        batch = actions.shape[0]
        if batch < contexts or batch % contexts:
            raise ValueError(
                f"actions has batch {batch}, which is not a multiple of the {contexts} contexts"
            )
        horizon = actions.shape[1] - (context_len - 1)
        if horizon < 1:
            raise ValueError(
                f"actions must hold the C - 1 = {context_len - 1} past actions plus at least one "
                f"candidate action, got {actions.shape[1]} steps"
            )
        self._check_steps(context_len - 1 + horizon, "context plus horizon")
        if context_len > 1:
            past = actions[:, : context_len - 1].unflatten(0, (contexts, -1))
            if not torch.equal(past, past[:, :1].expand_as(past)):
                raise ValueError(
                    "the first C - 1 actions (the context's own past actions) differ between "
                    "candidates of the same context; they must be identical"
                )
        return contexts, context_len, batch, horizon

    def _next_state(
        self, state: Tensor, action: Tensor, head_state: Tensor | None,
        next_state_fn: NextStateFn | None,
    ) -> Tensor:
        if next_state_fn is None:
            assert head_state is not None
            return head_state
        nxt = next_state_fn(state, action)
        if not isinstance(nxt, Tensor) or nxt.shape != state.shape:
            raise ValueError(
                f"next_state_fn must return a tensor of shape {tuple(state.shape)}, got "
                f"{getattr(nxt, 'shape', type(nxt).__name__)}"
            )
        return nxt

    def rollout(
        self,
        context_latents: Tensor,
        context_states: Tensor | None,
        actions: Tensor,
        next_state_fn: NextStateFn | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """Autoregressive prediction for planning, batched over candidates, with a
        key/value cache.

        context_latents ``[Bc, C, N, D]``, context_states ``[Bc, C, S]`` (None if
        ``state_dim == 0``), actions ``[B, C - 1 + H, A]`` with B a multiple of Bc:
        candidates of context b are rows ``b * (B // Bc) : (b + 1) * (B // Bc)``. The first
        C - 1 actions are the context's past actions (identical within a group; the first
        row's are used); the last H are the candidates' a_{C-1} .. a_{C+H-2}.

        Returns ``(pred_latents [B, H, N, D] = z_C .. z_{C+H-1}, pred_states [B, H, S] or
        None)``. Predicted states come from ``next_state_fn(state [B, S], action [B, A])``
        when given (it takes precedence), else from the state head.

        Under ``torch.no_grad()`` the cache is preallocated and written in place; with
        gradients enabled it grows by concatenation, so the result is differentiable in
        the actions (gradient planners). The cache costs ``2 * depth * B * (C + H - 2) * K
        * hidden_dim`` elements (none for C = H = 1); split the candidates into chunks
        if that does not fit.
        """
        contexts, context_len, batch, horizon = self._check_rollout(
            context_latents, context_states, actions, next_state_fn
        )
        c = self.config
        group = batch // contexts
        # Without autograd the cache lives in preallocated buffers written in place;
        # with autograd it grows by concatenation (in-place writes would break backward).
        # The last block is never attended to, so the cache holds C + H - 2 blocks.
        capacity = (context_len - 2 + horizon) * c.tokens_per_step
        in_place = not torch.is_grad_enabled() and capacity > 0
        past: list | None = [KVBuffer(batch, capacity) for _ in range(c.depth)] \
            if in_place else None
        if context_len > 1:
            # Blocks 0..C-2 hold only context frames/states and past actions: run them
            # once per context, then share their keys/values with every candidate.
            shared = self._embed(
                context_latents[:, : context_len - 1],
                actions[::group, : context_len - 1],
                None if context_states is None else context_states[:, : context_len - 1],
            )
            _, prefix = self._run_blocks(shared, start_step=0, past=None, keep_cache=True)
            if past is not None:
                for buffer, (k, v) in zip(past, prefix, strict=True):
                    buffer.append(k, v, group=group)
            else:
                past = [(k.repeat_interleave(group, 0), v.repeat_interleave(group, 0))
                        for k, v in prefix]

        latent = context_latents[:, context_len - 1].repeat_interleave(group, 0)  # [B, N, D]
        state = (None if context_states is None
                 else context_states[:, context_len - 1].repeat_interleave(group, 0))
        pred_latents, pred_states = [], []
        for step in range(horizon):
            t = context_len - 1 + step
            action = actions[:, t]
            tokens = self._embed(latent[:, None], action[:, None],
                                 None if state is None else state[:, None])
            x, past = self._run_blocks(tokens, start_step=t, past=past,
                                       keep_cache=step < horizon - 1)
            head_state = None if next_state_fn is not None else state  # skip an unused head
            frames, head_next = self._readout(
                x.view(batch, 1, c.tokens_per_step, -1), latent[:, None],
                None if head_state is None else head_state[:, None],
            )
            latent = frames[:, 0]
            pred_latents.append(latent)
            if state is not None:
                state = self._next_state(
                    state, action, None if head_next is None else head_next[:, 0], next_state_fn
                )
                pred_states.append(state)
        return (torch.stack(pred_latents, 1),
                torch.stack(pred_states, 1) if pred_states else None)

    def rollout_recompute(
        self,
        context_latents: Tensor,
        context_states: Tensor | None,
        actions: Tensor,
        next_state_fn: NextStateFn | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """Same contract as :meth:`rollout`, without a cache: every step reruns
        :meth:`forward` on the whole growing sequence at batch B (the released V-JEPA 2-AC
        planner's way). The reference for tests and benchmarks."""
        contexts, context_len, batch, horizon = self._check_rollout(
            context_latents, context_states, actions, next_state_fn
        )
        group = batch // contexts
        latents = context_latents.repeat_interleave(group, 0)  # [B, C, N, D]
        states = None if context_states is None else context_states.repeat_interleave(group, 0)
        # the context's own past actions, from the first row of each group (as rollout does)
        past_actions = actions[::group, : context_len - 1].repeat_interleave(group, 0)
        actions = torch.cat((past_actions, actions[:, context_len - 1 :]), dim=1)
        for step in range(horizon):
            t = context_len - 1 + step
            frames, head_states = self.forward(latents, actions[:, : t + 1], states)
            latents = torch.cat((latents, frames[:, t : t + 1]), dim=1)
            if states is not None:
                nxt = self._next_state(
                    states[:, t], actions[:, t],
                    None if head_states is None else head_states[:, t], next_state_fn,
                )
                states = torch.cat((states, nxt[:, None]), dim=1)
        pred_states = None if states is None else states[:, context_len:]
        return latents[:, context_len:], pred_states
