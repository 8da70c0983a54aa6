"""A trained world model as the agent sees it.

``WorldModel.load(checkpoint)`` rebuilds the frozen encoder from the checkpoint's
encoder reference (refusing one whose weights or preprocessing changed), the
predictor, the optional state readout, and the action/state normalisation the
predictor was trained with. The agent uses four verbs:

- ``encode(frames)``: uint8 frames -> latents (a model over several camera views takes
  a mapping camera -> frames and returns every view's tokens in turn);
- ``context(latents, states, past_actions)``: what the predictor conditions on;
- ``rollout(context, actions)``: candidate plans -> predicted latents;
- ``env_actions(planned)``: one planned step -> the env actions that carry it out.

The energy that compares predictions with a goal latent is the planner's
(``planners.energy``). Everything the agent hands in or gets back is in the
*environment's* units (raw ``[-1, 1]`` actions, raw proprio states); normalisation
happens here and nowhere else.

Time steps: one predictor step spans ``frameskip`` env steps, and its action token is
the concatenation of those ``frameskip`` env actions. A planner may search over the
full concatenation (``action_repeat=False``) or over one env action per predictor
step held for ``frameskip`` env steps (``action_repeat=True``: ``frameskip`` times
fewer dimensions to search, the way V-JEPA 2-AC and DINO-WM plan at a coarse rate).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from jepa_robot.world_model.checkpoint import (  # noqa: F401 - BUILTIN_CHECKPOINTS, imported from here
    BUILTIN_CHECKPOINTS,
    MACRO,
    Checkpoint,
    CheckpointError,
    encoder_differences,
    load_checkpoint,
    read_checkpoint_config,
    resolve_checkpoint,
)
from jepa_robot.world_model.encoders import VJEPA2Encoder, load_encoder_from_reference
from jepa_robot.world_model.predictor import ACPredictor
from jepa_robot.world_model.readout import load_readout

log = logging.getLogger(__name__)

IMAGE_KEY_PREFIX = "observation.images."

Images = np.ndarray | Tensor | Mapping[str, np.ndarray | Tensor]
"""Frames of one camera (a one-view model) or a mapping camera -> frames."""

NEXT_STATE_FUNCTIONS = {"jepa_robot.vjepa2_ac:droid_next_state": "jepa_robot.world_model.vjepa2_ac:droid_next_state"}
"""State-update functions a checkpoint may name in ``data.next_state`` (a model without
a state head rolls its proprio state forward with one): the name stored in checkpoints
-> where the function lives. A fixed table: a checkpoint never names arbitrary code to
import, and a stored name outlives a move of the code."""


def encoder_reference_for(checkpoint: Path, config: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint's encoder reference, with a relative encoder directory resolved
    against the checkpoint directory (how shipped models point at their encoder)."""
    reference = dict(config["encoder"])
    source = reference.get("source")
    if reference.get("weights_sha256") and source and not Path(source).is_absolute():
        reference["source"] = str((checkpoint / source).resolve())
    return reference


def stats_tensors(directory: Path, stats: dict[str, Any], key: str, dim: int,
                  device: torch.device) -> tuple[Tensor, Tensor]:
    """``stats.json``'s mean and std (clamped away from 0) of ``key``, checked to be ``dim``-D."""
    entry = stats.get(key)
    if entry is None:
        raise CheckpointError(f"{directory}: stats.json has no {key!r} entry")
    mean = torch.tensor(entry["mean"], dtype=torch.float32, device=device)
    std = torch.tensor(entry["std"], dtype=torch.float32, device=device)
    if mean.shape != (dim,) or std.shape != (dim,):
        raise CheckpointError(f"{directory}: {key} stats have {mean.numel()} dims, the predictor {dim}")
    return mean, std.clamp_min(1e-6)


@dataclass
class Context:
    """What the model has seen, normalised and on the model's device.

    ``latents [C, N, D]`` of the last C observed frames (one predictor step apart),
    ``states [C, S]`` (or None) and ``past_actions [C - 1, A_model]``: the actions
    taken between those frames.
    """

    latents: Tensor
    states: Tensor | None
    past_actions: Tensor


class WorldModel:
    """Frozen encoder + action-conditioned predictor + normalisation stats."""

    def __init__(self, checkpoint: Checkpoint, encoder: VJEPA2Encoder, device: torch.device,
                 with_readout: bool = True) -> None:
        self.checkpoint = checkpoint
        """The loaded checkpoint (its directory, config and encoder reference)."""
        self.encoder = encoder
        """The frozen encoder the checkpoint was trained with."""
        self.device = device
        self._predictor: ACPredictor = checkpoint.predictor
        data = checkpoint.config["data"]
        self.frameskip = int(data["frameskip"])
        """Env steps per predictor step."""
        self.cameras: tuple[str, ...] = tuple(key.removeprefix(IMAGE_KEY_PREFIX) for key in data["image_keys"])
        """The cameras the model sees (``observation.images.<camera>``), in token order."""
        self._image_shape = tuple(int(v) for v in data["image_shape"])
        self.image_size = self._image_shape[0]
        """Side of the square frames the model takes (``env.image_size``, ``robot.image_size``)."""
        model_action_dim = self._predictor.config.action_dim
        if model_action_dim % self.frameskip:
            raise CheckpointError(
                f"{checkpoint.directory}: predictor action_dim {model_action_dim} is not a "
                f"multiple of frameskip {self.frameskip}"
            )
        self.env_action_dim = model_action_dim // self.frameskip
        """Size of one env action."""
        self.state_dim = self._predictor.config.state_dim
        """Size of the proprio state the model takes (0: none)."""
        stats = checkpoint.stats
        self._action_mean, self._action_std = self._stats(stats, "action", model_action_dim)
        self._state_mean, self._state_std = (
            self._stats(stats, "state", self.state_dim) if self.state_dim else (None, None)
        )
        self._next_state = self._next_state_function(data.get("next_state"))
        self.readout = (load_readout(checkpoint.directory, encoder.reference(), device)
                        if with_readout else None)
        """The checkpoint's state readout (latents -> raw states), or None."""

    @classmethod
    def load(cls, checkpoint: str | Path, device: str | torch.device = "cpu",
             with_readout: bool = True) -> WorldModel:
        """Load a checkpoint directory (or a built-in name such as ``default``) and the
        encoder it was trained with; ``with_readout=False`` skips its state readout."""
        device = torch.device(device)
        checkpoint = resolve_checkpoint(checkpoint)
        config = read_checkpoint_config(checkpoint)
        if MACRO in config:
            raise CheckpointError(
                f"{checkpoint} is a high-level checkpoint (trained with macro_steps="
                f"{config[MACRO].get('steps')}): plan with it as agent.hierarchy.checkpoint, beside "
                "the low-level checkpoint it was trained with")
        encoder = load_encoder_from_reference(encoder_reference_for(checkpoint, config), device=device)
        loaded = load_checkpoint(checkpoint, encoder_reference=encoder.reference(), device=device)
        log.info("world model %s: predictor %.1fM params, encoder %s, frameskip %d",
                 checkpoint, sum(p.numel() for p in loaded.predictor.parameters()) / 1e6,
                 config["encoder"].get("source"), loaded.frameskip)
        return cls(loaded, encoder, device, with_readout)

    def _stats(self, stats: dict[str, Any], key: str, dim: int) -> tuple[Tensor, Tensor]:
        return stats_tensors(self.checkpoint.directory, stats, key, dim, self.device)

    def _next_state_function(self, name: str | None):
        """The state update named by the checkpoint, acting on normalised tensors."""
        if name is None:
            if self.state_dim and not self._predictor.config.has_state_head:
                raise CheckpointError(
                    f"{self.checkpoint.directory}: the predictor takes states but has no state head "
                    "and the checkpoint names no data.next_state function to roll them forward"
                )
            return None
        if name not in NEXT_STATE_FUNCTIONS:
            raise CheckpointError(f"{self.checkpoint.directory}: unknown data.next_state {name!r}; "
                                  f"known: {sorted(NEXT_STATE_FUNCTIONS)}")
        import importlib

        module, function = NEXT_STATE_FUNCTIONS[name].split(":")
        update = getattr(importlib.import_module(module), function)

        def next_state(state: Tensor, action: Tensor) -> Tensor:
            # the function works in env units: undo and redo the normalisation around it
            raw_state = state * self._state_std + self._state_mean
            raw_action = action * self._action_std + self._action_mean
            return (update(raw_state, raw_action) - self._state_mean) / self._state_std

        return next_state

    # ------------------------------------------------------------------ verbs
    def planned_action_dim(self, action_repeat: bool) -> int:
        """Size of one planned action per predictor step."""
        return self.env_action_dim if action_repeat else self.env_action_dim * self.frameskip

    @property
    def views(self) -> int:
        """Camera views per time step."""
        return len(self.cameras)

    @property
    def tokens_per_view(self) -> int:
        """Latent tokens of one camera's frame (a latent holds ``views`` times as many)."""
        return self._predictor.config.num_tokens // self.views

    def frames_by_view(self, images: Images, check_size: bool = True) -> list[np.ndarray | Tensor]:
        """Frames ``[..., H, W, 3]`` per camera, in the model's order: ``images`` is a mapping
        camera -> frames (extra cameras are ignored), or, for a one-view model, the frames
        themselves. ``check_size`` refuses frames of another size than the model's."""
        if isinstance(images, Mapping):
            missing = [camera for camera in self.cameras if camera not in images]
            if missing:
                raise ValueError(f"the world model sees cameras {list(self.cameras)}; no frames from "
                                 f"{missing} (given: {sorted(images)})")
            views = [images[camera] for camera in self.cameras]
        elif self.views == 1:
            views = [images]
        else:
            raise ValueError(f"the world model sees {self.views} cameras {list(self.cameras)}: give a "
                             "mapping camera -> frames, not one camera's frames")
        for camera, frames in zip(self.cameras, views, strict=True):
            if check_size and tuple(frames.shape[-3:]) != self._image_shape:
                raise ValueError(f"the model was trained on {self._image_shape} frames from camera "
                                 f"{camera!r}; got {tuple(frames.shape[-3:])}")
        return views

    @torch.no_grad()
    def encode(self, frames: Images) -> Tensor:
        """uint8 frames ``[B, H, W, 3]`` (per camera: see :meth:`frames_by_view`; of any size
        the encoder prepares) -> latents ``[B, V * N, D]`` on the model's device, every view's
        tokens in turn. Views of one size go through the encoder in one batch."""
        views = self.frames_by_view(frames, check_size=False)
        if len(views) > 1 and len({tuple(view.shape) for view in views}) == 1:
            batch = views[0].shape[0]
            together = (torch.cat([torch.as_tensor(view) for view in views]) if any(isinstance(v, Tensor) for v in views)
                        else np.concatenate(views))
            latents = self.encoder.encode(together).to(self.device, torch.float32)  # [V * B, N, D]
            return latents.unflatten(0, (len(views), batch)).transpose(0, 1).flatten(1, 2)
        return torch.cat([self.encoder.encode(view).to(self.device, torch.float32) for view in views], dim=1)

    def encode_images(self, images: Sequence[Images]) -> Tensor:
        """Observations or goals, each a frame ``[H, W, 3]`` per camera (checked against the
        model's frame size) -> latents ``[G, V * N, D]``, encoded together."""
        per_image = [self.frames_by_view(image) for image in images]
        return self.encode({camera: np.stack([np.asarray(views[index]) for views in per_image])
                            for index, camera in enumerate(self.cameras)})

    def encode_image(self, image: Images) -> Tensor:
        """One observation or goal: a frame ``[H, W, 3]`` per camera -> latent ``[V * N, D]``."""
        return self.encode_images([image])[0]

    def encode_observation(self, observation: Mapping[str, Any]) -> Tensor:
        """An env or robot observation (``{"images": {camera: frame}, ...}``) -> its latent."""
        return self.encode_image(observation.get("images", {}))

    def context(self, latents: Tensor, states: np.ndarray | Tensor | None,
                past_actions: Tensor | None, action_repeat: bool) -> Context:
        """What the predictor conditions on, from the last C observed frames (one
        predictor step apart): their latents ``[C, N, D]`` (from :meth:`encode`), their
        raw proprio states ``[C, S]`` (None, or ignored, for a model without states) and
        the C - 1 planned steps ``[C - 1, A_plan]`` taken between them, in env units."""
        model_dim = self._action_mean.numel()
        if past_actions is None or past_actions.shape[0] == 0:
            past = latents.new_zeros(0, model_dim)
        else:
            past = self._model_actions(past_actions.to(self.device, torch.float32), action_repeat)
        if past.shape[0] != latents.shape[0] - 1:
            raise ValueError(f"{latents.shape[0]} context frames need {latents.shape[0] - 1} past "
                             f"actions, got {past.shape[0]}")
        return Context(latents=latents, states=self._normalise_state(states), past_actions=past)

    def rollout(self, context: Context, actions: Tensor, action_repeat: bool) -> Tensor:
        """Predict latents for candidate plans.

        ``actions [B, H, A_plan]`` in env units -> predicted latents ``[B, H, N, D]``
        for the H predictor steps after the context's last frame.
        """
        batch = actions.shape[0]
        model_actions = self._model_actions(actions.to(self.device, torch.float32), action_repeat)
        if context.past_actions.shape[0]:
            past = context.past_actions.unsqueeze(0).expand(batch, -1, -1)
            model_actions = torch.cat((past, model_actions), dim=1)
        states = None if context.states is None else context.states.unsqueeze(0)
        return self._predictor.rollout(context.latents.unsqueeze(0), states, model_actions,
                                       next_state_fn=self._next_state)[0]

    def env_actions(self, planned: Tensor, action_repeat: bool) -> np.ndarray:
        """One planned step ``[A_plan]`` -> the ``frameskip`` env actions ``[frameskip, A_env]``."""
        planned = planned.detach().float().cpu()
        if action_repeat:
            return planned.expand(self.frameskip, self.env_action_dim).numpy().copy()
        return planned.reshape(self.frameskip, self.env_action_dim).numpy().copy()

    # ------------------------------------------------------------------ normalisation
    def _normalise_state(self, states: np.ndarray | Tensor | None) -> Tensor | None:
        """Raw proprio states ``[..., S]`` -> the predictor's normalised states (None if stateless)."""
        if not self.state_dim or states is None:
            if self.state_dim:
                raise ValueError(f"the model takes {self.state_dim}-D states; none were given")
            return None
        states = torch.as_tensor(np.asarray(states), dtype=torch.float32, device=self.device)
        if states.shape[-1] != self.state_dim:
            raise ValueError(f"the model takes {self.state_dim}-D states, got {states.shape[-1]}-D")
        return (states - self._state_mean) / self._state_std

    def _model_actions(self, actions: Tensor, action_repeat: bool) -> Tensor:
        """Planned actions ``[..., A_plan]`` in env units -> normalised predictor actions
        ``[..., frameskip * A_env]``."""
        if action_repeat:
            # [a, a, ..., a]: the same env action for each of the frameskip env steps
            actions = actions.repeat((1,) * (actions.dim() - 1) + (self.frameskip,))
        if actions.shape[-1] != self._action_mean.numel():
            raise ValueError(
                f"the predictor takes {self._action_mean.numel()}-D actions "
                f"({self.frameskip} x {self.env_action_dim}), got {actions.shape[-1]}-D"
            )
        return (actions - self._action_mean.to(actions)) / self._action_std.to(actions)


class HighLevelModel:
    """The high level of a two-level world model (``jepa-robot train macro_steps=K``;
    :mod:`jepa_robot.world_model.macro`), planning in the latent space of a low-level
    :class:`WorldModel`: one step spans ``macro_steps`` of the low level's predictor steps,
    and its actions are macro-actions, searched inside :attr:`macro_bounds`.

    Loading refuses a high-level checkpoint that does not fit the low-level model: another
    encoder (another latent space), camera, frame size, frameskip or state."""

    def __init__(self, checkpoint: Checkpoint, low_level: WorldModel) -> None:
        directory = checkpoint.directory
        if not checkpoint.is_high_level:
            raise CheckpointError(f"{directory} is not a high-level checkpoint (train one with "
                                  "`jepa-robot train macro_steps=K`)")
        self.checkpoint = checkpoint
        self.device = low_level.device
        self._predictor = checkpoint.predictor
        data, low_data = checkpoint.config["data"], low_level.checkpoint.config["data"]
        for key in ("image_keys", "image_shape", "frameskip", "state_key"):
            if data.get(key) != low_data.get(key):
                raise CheckpointError(f"{directory} was trained with data.{key}={data.get(key)!r}; the "
                                      f"low-level checkpoint with {low_data.get(key)!r}")
        macro = self._predictor.macro_config
        self.macro_steps = macro.steps
        """Low-level predictor steps per high-level step."""
        self.env_steps = macro.steps * low_level.frameskip
        """Env steps per high-level step."""
        self.macro_dim = macro.dim
        self.state_dim = self._predictor.config.state_dim
        if self.state_dim != low_level.state_dim:
            raise CheckpointError(f"{directory} takes {self.state_dim}-D states; the low-level "
                                  f"checkpoint {low_level.state_dim}-D")
        stats = checkpoint.stats
        self._state_mean, self._state_std = (
            stats_tensors(directory, stats, "state", self.state_dim, self.device)
            if self.state_dim else (None, None))
        self._action_mean, self._action_std = stats_tensors(directory, stats, "action", macro.input_dim,
                                                            self.device)
        spread = stats.get("macro_action")
        if not isinstance(spread, dict) or not all(
                isinstance(spread.get(k), list) and len(spread[k]) == self.macro_dim for k in ("low", "high")):
            raise CheckpointError(f"{directory}: stats.json has no {self.macro_dim}-D macro_action low/high")
        self.macro_low = [float(v) for v in spread["low"]]
        self.macro_high = [float(v) for v in spread["high"]]

    @classmethod
    def load(cls, checkpoint: str | Path, low_level: WorldModel) -> HighLevelModel:
        """Load a high-level checkpoint for planning in ``low_level``'s latent space."""
        directory = resolve_checkpoint(checkpoint)
        config = read_checkpoint_config(directory)
        saved = encoder_reference_for(directory, config)
        difference = encoder_differences(saved, low_level.encoder.reference())
        if difference:
            raise CheckpointError(f"{directory} was trained on latents of another encoder than the "
                                  f"low-level checkpoint's: {'; '.join(difference)}")
        loaded = load_checkpoint(directory, device=low_level.device)
        return cls(loaded, low_level)

    @property
    def macro_bounds(self):
        """Where a planner searches macro-actions: the range of the training data's ones."""
        from planners import ActionBounds

        return ActionBounds(low=list(self.macro_low), high=list(self.macro_high))

    @torch.no_grad()
    def macro_actions(self, actions: np.ndarray | Tensor) -> Tensor:
        """The macro-actions of env actions ``[..., env_steps, A_env]`` (each group of
        ``env_steps`` consecutive ones, in env units): ``[..., dim]``, as in training."""
        actions = torch.as_tensor(np.asarray(actions), dtype=torch.float32, device=self.device)
        flat = actions.reshape(*actions.shape[:-2], -1)
        if flat.shape[-1] != self._action_mean.numel():
            raise ValueError(f"a high-level step spans {self.env_steps} env actions "
                             f"({self._action_mean.numel()} values); got {tuple(actions.shape[-2:])}")
        return self._predictor.action_encoder((flat - self._action_mean) / self._action_std)

    def rollout(self, latent: Tensor, state: np.ndarray | Tensor | None, macro_actions: Tensor) -> Tensor:
        """From one observed frame's latent ``[N, D]`` and raw state ``[S]`` (None for a
        stateless model), candidate macro-action plans ``[B, H, dim]`` -> predicted latents
        ``[B, H, N, D]``, one per high-level step."""
        states = None
        if self.state_dim:
            if state is None:
                raise ValueError(f"the high-level model takes {self.state_dim}-D states; none was given")
            raw = torch.as_tensor(np.asarray(state), dtype=torch.float32, device=self.device)
            if raw.shape != (self.state_dim,):
                raise ValueError(f"the high-level model takes {self.state_dim}-D states, got {tuple(raw.shape)}")
            states = ((raw - self._state_mean) / self._state_std).reshape(1, 1, self.state_dim)
        predicted, _ = self._predictor.predictor.rollout(
            latent.to(self.device, torch.float32)[None, None], states,
            macro_actions.to(self.device, torch.float32))
        return predicted
