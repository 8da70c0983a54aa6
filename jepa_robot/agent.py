"""The MPC agent: the one place where world model, planner and env meet.

Every ``frameskip`` env steps (one predictor step) the agent encodes the current
frame, picks the active goal image, and, when its queue of planned steps has run
out, plans ``horizon`` predictor steps toward the goal latent and queues the first
``execute_steps`` of them. Between boundaries it plays the queued env actions.

Sub-goals: ``reset(goals)`` takes goal frames in order, the final goal last. The
agent moves to the next one on a step ``schedule`` (``subgoal_steps`` env steps
each) or on a latent ``distance`` threshold (at most ``subgoal_steps`` each).

```python
agent = MPCAgent(WorldModel.load("runs/pick-place/checkpoint"), planner, AgentConfig())
agent.reset([grasp_frame, lift_frame, goal_frame])
action = agent.act(observation)        # {"images": {cam: HxWx3}, "state": [S]} -> [A]
```

Hierarchical planning (``HierarchicalAgent``, ``agent.hierarchy.checkpoint``): the
sub-goals are not images but latents that a high-level world model predicts on its way
to the one (final) goal image; they move on by the same schedule or distance rule.
``make_agent`` builds whichever the agent config asks for.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from jepa_robot.config.planning import AgentConfig, PlannerSettings
from jepa_robot.world_model.model import HighLevelModel, Images, WorldModel
from planners import ActionBounds, Planner, make_energy, make_planner
from planners.hierarchy import SubgoalPlanner

log = logging.getLogger(__name__)


def build_planner(settings: PlannerSettings, action_dim: int, readout=None,
                  bounds: ActionBounds | None = None, cameras: Sequence[str] = (),
                  tokens_per_view: int = 0) -> Planner:
    """A planner from its config-group settings, for ``action_dim``-D planned actions.
    ``readout`` (latents -> states) is the world model's, for ``energy: readout``;
    ``bounds`` replace the settings' own (the high level's macro-action range);
    ``cameras`` and ``tokens_per_view`` (the world model's) turn ``energy_views`` into
    token weights."""
    bounds = (settings.bounds if bounds is None else bounds).for_action_dim(action_dim)
    if settings.energy == "readout":
        if readout is None:
            raise ValueError(f"{settings.KEY}.energy=readout needs a checkpoint with a state readout "
                             "(readout.json); fit one with `jepa-robot fit-readout checkpoint=...`")
        weights = None if settings.energy_weights is None else tuple(settings.energy_weights)
        config = getattr(readout, "config", None)  # a StateReadout says what it predicts
        if weights is not None and config is not None and len(weights) != config.state_dim:
            raise ValueError(f"{settings.KEY}.energy_weights has {len(weights)} weights; the checkpoint's "
                             f"readout predicts {config.state_dim} values {config.state_names}")
        energy = make_energy("readout", steps=settings.energy_steps, readout=readout, weights=weights)
    else:
        energy = make_energy(settings.energy, steps=settings.energy_steps,
                             token_weights=view_token_weights(settings, cameras, tokens_per_view))
    try:
        return make_planner(settings.name, bounds=bounds, energy=energy, action_dim=action_dim,
                            **dict(settings.options))
    except TypeError as error:  # an unknown option name
        raise ValueError(f"{settings.KEY} {settings.name!r}: {error}") from error


def model_planner(world_model: WorldModel, settings: PlannerSettings, action_dim: int) -> Planner:
    """:func:`build_planner` with the world model's readout and camera views."""
    return build_planner(settings, action_dim, world_model.readout, cameras=world_model.cameras,
                         tokens_per_view=world_model.tokens_per_view)


def view_token_weights(settings: PlannerSettings, cameras: Sequence[str],
                       tokens_per_view: int) -> tuple[float, ...] | None:
    """``settings.energy_views`` (a weight per camera, 1 for a camera not named) as one
    weight per latent token of a world model over ``cameras``; None without views."""
    if not settings.energy_views:
        return None
    unknown = sorted(set(settings.energy_views) - set(cameras))
    if unknown:
        raise ValueError(f"{settings.KEY}.energy_views names {unknown}; the world model sees {list(cameras)}")
    weights = [settings.energy_views.get(camera, 1.0) for camera in cameras]
    if not any(weights):
        raise ValueError(f"{settings.KEY}.energy_views={settings.energy_views} leaves no view in the energy")
    return tuple(w for w in weights for _ in range(tokens_per_view))


@dataclass
class Replan:
    """One planning call, for reports and videos."""

    step: int
    """Env step at which the plan was made."""
    seconds: float
    """Encode + plan wall time."""
    plan_seconds: float
    """The planner's own time."""
    energy: float
    """Energy of the chosen plan."""
    iterations: int
    goal_index: int
    """Which goal image was active (the last is the final goal)."""
    goal_distance: float
    """Distance of the current frame's latent to the active goal latent (energy units)."""
    high_level_seconds: float = 0.0
    """Of ``seconds``: the high-level plan made at this step (hierarchical agent), if any."""


@dataclass
class _History:
    """The last observed frames' latents and raw states, and the planned steps taken
    between them (env units)."""

    latents: list[torch.Tensor] = field(default_factory=list)
    states: list[np.ndarray | None] = field(default_factory=list)
    actions: list[torch.Tensor] = field(default_factory=list)


class MPCAgent:
    """Receding-horizon planning toward goal images with a latent world model: the
    planner compares predicted latents with the goal latents through its energy."""

    def __init__(self, world_model: WorldModel, planner: Planner, config: AgentConfig) -> None:
        self.world_model = world_model
        self.planner = planner
        self.config = config
        expected = world_model.planned_action_dim(config.action_repeat)
        if planner.config.action_dim != expected:
            raise ValueError(
                f"planner plans {planner.config.action_dim}-D actions; this world model with "
                f"action_repeat={config.action_repeat} needs {expected}-D"
            )
        self.replans: list[Replan] = []
        self._goal_latents: torch.Tensor | None = None

    @classmethod
    def from_settings(cls, world_model: WorldModel, planner: PlannerSettings,
                      config: AgentConfig) -> MPCAgent:
        action_dim = world_model.planned_action_dim(config.action_repeat)
        return cls(world_model, model_planner(world_model, planner, action_dim), config)

    # ------------------------------------------------------------------ episode
    def reset(self, goals: Sequence[Images]) -> None:
        """Start an episode toward ``goals`` (sub-goals first, final goal last), each a uint8
        frame or, for a world model over several cameras, a mapping camera -> frame."""
        if len(goals) == 0:
            raise ValueError("reset() needs at least one goal frame")
        self._goal_latents = self.world_model.encode_images(goals)
        self.planner.reset()
        self.replans = []
        self._history = _History()
        self._queued_steps: list[torch.Tensor] = []  # planned predictor steps still to run
        self._env_actions: list[np.ndarray] = []  # env actions of the current predictor step
        self._step = 0
        self._goal_index = 0
        self._goal_since = 0
        self._high_level_seconds = 0.0  # set by a hierarchical agent's _update_goal

    @property
    def goal_index(self) -> int:
        return self._goal_index

    @property
    def num_goals(self) -> int:
        return 0 if self._goal_latents is None else int(self._goal_latents.shape[0])

    def act(self, observation: dict[str, Any]) -> np.ndarray:
        """The next env action ``[A_env]`` for ``observation``."""
        if self._goal_latents is None:
            raise RuntimeError("call reset(goals) before act()")
        if not self._env_actions:
            self._start_predictor_step(observation)
        self._step += 1
        return self._env_actions.pop(0)

    # ------------------------------------------------------------------ internals
    def _start_predictor_step(self, observation: dict[str, Any]) -> None:
        started = time.perf_counter()
        wm, config = self.world_model, self.config
        latent = wm.encode_observation(observation)
        history = self._history
        history.latents.append(latent)
        history.states.append(np.asarray(observation["state"], dtype=np.float32) if wm.state_dim else None)
        keep = config.context_frames
        del history.latents[:-keep], history.states[:-keep]
        del history.actions[: max(0, len(history.actions) - (len(history.latents) - 1))]

        distance = self._update_goal(latent)
        if not self._queued_steps:
            context = wm.context(
                torch.stack(history.latents),
                np.stack(history.states) if wm.state_dim else None,
                torch.stack(history.actions) if history.actions else None,
                config.action_repeat,
            )
            goal = self._goal_latents[self._goal_index]

            def rollout(actions: torch.Tensor) -> torch.Tensor:
                return wm.rollout(context, actions, config.action_repeat)

            result = self.planner.plan(rollout, goal)
            self._queued_steps = list(result.actions[0, : config.execute_steps])
            self.replans.append(Replan(
                step=self._step, seconds=time.perf_counter() - started,
                plan_seconds=result.seconds, energy=float(result.energy[0]),
                iterations=result.iterations, goal_index=self._goal_index,
                goal_distance=distance, high_level_seconds=self._high_level_seconds,
            ))
        self._high_level_seconds = 0.0
        planned = self._queued_steps.pop(0)
        history.actions.append(planned)
        self._env_actions = list(wm.env_actions(planned, config.action_repeat))

    def _update_goal(self, latent: torch.Tensor) -> float:
        """Advance to the next goal if the schedule or the distance says so; returns the
        current frame's distance to the (possibly new) active goal."""
        config = self.config

        def distance_to(index: int) -> float:
            return float(self.planner.energy.per_step(latent[None, None], self._goal_latents[index])[0, 0])

        distance = distance_to(self._goal_index)
        last = self.num_goals - 1
        while self._goal_index < last:
            on_goal = self._step - self._goal_since
            reached = config.subgoal_switch == "distance" and distance <= config.subgoal_threshold
            if not (reached or on_goal >= config.subgoal_steps):
                break
            self._goal_index += 1
            self._goal_since = self._step
            # The old plan aimed at the old goal: plan afresh at this boundary.
            self._queued_steps = []
            log.debug("step %d: goal %d -> %d (distance %.3f)", self._step, self._goal_index - 1,
                      self._goal_index, distance)
            distance = distance_to(self._goal_index)
        return distance


@dataclass
class HighLevelPlan:
    """One high-level plan of a hierarchical agent."""

    step: int
    """Env step at which it was made."""
    seconds: float
    energy: float
    """Energy of its best plan (the high-level planner's units)."""
    goal_distance: float
    """Distance of the frame it planned from to the final goal (low-level energy units)."""


class HierarchicalAgent(MPCAgent):
    """The MPC agent with sub-goals from a high-level world model (HWM-style).

    At a predictor-step boundary where the active sub-goal is due to move on (none yet,
    ``subgoal_steps`` env steps spent on it, or, with ``subgoal_switch=distance``, the
    frame within ``subgoal_threshold`` of it), the high-level planner plans
    ``hierarchy.planner.options.horizon`` macro-actions from the current frame toward the
    final goal latent, and the first latent the high-level model predicts on its best plan
    becomes the low-level planner's goal. The low level replans at once toward it. Once the
    frame is within ``subgoal_threshold`` of the final goal itself, the low level aims at
    the final goal and the high level stops planning (the last leg needs no sub-goal, and
    a predicted latent is less exact than the goal image's).

    The high-level planner warm-starts from its previous plan shifted by one macro-step
    when the new plan comes one macro-step (``macro_steps * frameskip`` env steps) after
    it; earlier or later, it starts afresh.

    ``reset`` takes the final goal image only. ``high_plans`` lists the high-level plans
    of the episode; their time is part of the ``Replan`` made at the same step."""

    def __init__(self, world_model: WorldModel, planner: Planner, config: AgentConfig,
                 high_level: HighLevelModel, high_level_planner: Planner) -> None:
        super().__init__(world_model, planner, config)
        if high_level_planner.config.action_dim != high_level.macro_dim:
            raise ValueError(f"the high-level planner plans {high_level_planner.config.action_dim}-D "
                             f"actions; the high-level model's macro-actions are {high_level.macro_dim}-D")
        self.high_level = high_level
        self.subgoals = SubgoalPlanner(high_level_planner)
        self.high_plans: list[HighLevelPlan] = []

    def reset(self, goals: Sequence[Images]) -> None:
        if len(goals) != 1:
            raise ValueError(f"the hierarchical agent plans its own sub-goals toward one goal image; "
                             f"got {len(goals)} goals (plan flat for sub-goal images)")
        super().reset(goals)
        self._final_goal = self._goal_latents[0]
        self._subgoal: torch.Tensor | None = None
        self._at_final_goal = False
        self.subgoals.reset()
        self.high_plans = []

    def _update_goal(self, latent: torch.Tensor) -> float:
        config = self.config

        def distance_to(goal: torch.Tensor) -> float:
            return float(self.planner.energy.per_step(latent[None, None], goal)[0, 0])

        to_final = distance_to(self._final_goal)
        if self._at_final_goal:
            return to_final
        if to_final <= config.subgoal_threshold:
            self._at_final_goal = True
            self._subgoal = self._final_goal
            self._goal_latents = self._final_goal[None]
            self._queued_steps = []
            return to_final
        due = self._subgoal is None or self._step - self._goal_since >= config.subgoal_steps
        if not due and config.subgoal_switch == "distance":
            due = distance_to(self._subgoal) <= config.subgoal_threshold
        if due:
            state = self._history.states[-1]

            def rollout(macro_actions: torch.Tensor) -> torch.Tensor:
                return self.high_level.rollout(latent, state, macro_actions)

            if self.high_plans and self._step - self.high_plans[-1].step != self.high_level.env_steps:
                self.subgoals.planner.previous_plan = None  # its shift assumes one macro-step
            plan = self.subgoals.plan(rollout, self._final_goal)
            self._subgoal = plan.subgoal
            self._goal_latents = plan.subgoal[None]
            self._goal_since = self._step
            self._queued_steps = []  # the old plan aimed at the old sub-goal
            self._high_level_seconds = plan.seconds
            self.high_plans.append(HighLevelPlan(
                step=self._step, seconds=plan.seconds, energy=float(plan.result.energy[0]),
                goal_distance=to_final))
        return distance_to(self._subgoal)


def make_agent(world_model: WorldModel, planner: PlannerSettings, config: AgentConfig) -> MPCAgent:
    """The agent ``config`` asks for: a :class:`HierarchicalAgent` when
    ``config.hierarchy.checkpoint`` is set (the high-level checkpoint must share the world
    model's encoder), else the flat :class:`MPCAgent`."""
    if not config.hierarchical:
        return MPCAgent.from_settings(world_model, planner, config)
    high_level = HighLevelModel.load(config.hierarchy.checkpoint, world_model)
    if config.subgoal_steps != high_level.env_steps:
        log.warning("agent.subgoal_steps=%d, but a sub-goal is one high-level step (%d env steps) ahead",
                    config.subgoal_steps, high_level.env_steps)
    high_level_planner = build_planner(config.hierarchy.planner, high_level.macro_dim, world_model.readout,
                                       bounds=high_level.macro_bounds, cameras=world_model.cameras,
                                       tokens_per_view=world_model.tokens_per_view)
    action_dim = world_model.planned_action_dim(config.action_repeat)
    return HierarchicalAgent(world_model, model_planner(world_model, planner, action_dim), config,
                             high_level, high_level_planner)


@dataclass
class EpisodeResult:
    """How one closed-loop episode went."""

    success: bool
    """The env's success flag at the last step (the protocol's criterion)."""
    steps: int
    seconds: float
    replans: list[Replan]
    success_steps: int
    """Steps at which the success flag was up (diagnostic only; never used for control)."""
    final_goal_distance_m: float | None = None
    """The env's distance behind the success flag at the last step (``info["goal_distance_m"]``,
    metres), when the env reports one. Diagnostic only, like ``success_steps``."""
    min_goal_distance_m: float | None = None
    """The smallest such distance over the episode."""


def run_episode(
    env: Any,
    agent: Callable[[dict[str, Any]], np.ndarray] | MPCAgent,
    observation: dict[str, Any],
    steps: int,
    on_step: Callable[[int, dict[str, Any], np.ndarray, dict[str, Any]], None] | None = None,
) -> EpisodeResult:
    """Run ``steps`` env steps from ``observation`` (the env already reset), judging
    success on the last step. ``agent`` is an ``MPCAgent`` or any ``observation ->
    action`` callable. ``on_step(step, observation, action, info)`` sees every step."""
    act = agent.act if isinstance(agent, MPCAgent) else agent
    started = time.perf_counter()
    info: dict[str, Any] = {"success": False}
    success_steps = 0
    distances: list[float] = []
    for step in range(steps):
        action = act(observation)
        observation, _, terminated, truncated, info = env.step(action)
        success_steps += bool(info.get("success", False))
        if "goal_distance_m" in info:
            distances.append(float(info["goal_distance_m"]))
        if on_step is not None:
            on_step(step, observation, action, info)
        if terminated:
            break
    return EpisodeResult(
        success=bool(info.get("success", False)),
        steps=step + 1,
        seconds=time.perf_counter() - started,
        replans=list(agent.replans) if isinstance(agent, MPCAgent) else [],
        success_steps=success_steps,
        final_goal_distance_m=distances[-1] if distances else None,
        min_goal_distance_m=min(distances) if distances else None,
    )
