"""Goal images by the evaluation protocol (docs/protocol.md).

``protocol`` goals (the default): reset(seed), run the noise-free *task-aimed* scripted
expert (``ScriptedExpert.aimed_action``: it drives what success is judged on, the
fingers' centre for reach and the object for push and pick-place, onto the target) for
the task's full step budget. The goal image is the frame, among those where the
simulator reports success, with the smallest task distance (earliest on ties). The
frames where the expert's phase changes (``envs.metaworld.experts.SUBGOAL_PHASES``: push
``contact``, pick-place ``grasp`` and ``lift``) before that frame are the sub-goal
images. A seed whose expert never succeeds raises ``GoalNotReachedError``.

``jepa_wms`` goals, for setting a figure beside the JEPA-WMs study's: Meta-World's own
(hand-aimed) expert runs 100 steps and its last frame is the goal, whether or not it
succeeded; no sub-goals.

Either way the env is then reset to the seed again, so the episode starts from exactly
the state the goal was made from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from envs.metaworld.env import EPISODE_BUDGET, MetaWorldGoalEnv
from envs.metaworld.experts import SUBGOAL_PHASES, ScriptedExpert, expert_phase
from envs.metaworld.tasks import GOAL_SOURCES

JEPA_WMS_STEPS = 100
"""JEPA-WMs' goal frame: the last of Meta-World's own expert's first 100 steps."""


class GoalNotReachedError(RuntimeError):
    """The scripted expert did not solve the task from this seed within its budget."""


@dataclass
class GoalImages:
    """Goal and sub-goal images for one seed, per camera."""

    seed: int
    goal: dict[str, np.ndarray]
    """Final goal frame per camera, uint8 (H, W, 3)."""
    goal_state: np.ndarray
    """Proprio state at the goal frame, float32 (4,)."""
    subgoals: list[dict[str, np.ndarray]] = field(default_factory=list)
    """Frames at the expert's phase changes, in order (empty for reach)."""
    subgoal_phases: list[str] = field(default_factory=list)
    """The phase each sub-goal frame starts (push ``contact``; pick-place ``grasp``, ``lift``)."""
    subgoal_steps: list[int] = field(default_factory=list)
    """The expert step each sub-goal frame was seen after (0: the reset frame)."""
    expert_steps: int = 0
    """Steps the expert took to first success (``jepa_wms``: 0 if it never succeeded)."""
    goal_step: int = 0
    """The expert step whose frame is the goal image."""
    goal_distance_m: float | None = None
    """The task distance at the goal frame (``info["goal_distance_m"]``: the fingers'
    centre or the object to the target, metres): how far inside the success radius the
    goal image sits."""
    source: str = "protocol"
    """Which rule made the goal (``GOAL_SOURCES``)."""
    subgoal_truth: list[np.ndarray] = field(default_factory=list)
    """Hand xyz, gripper opening and object xyz at each sub-goal frame, float32 (7,).
    Privileged, like ``goal_distance_m``: for diagnostics, never shown to an agent."""
    goal_truth: np.ndarray | None = None
    """The same at the final goal frame."""


def _truth(env: MetaWorldGoalEnv) -> np.ndarray:
    return np.asarray(env.privileged_obs[:7], dtype=np.float32).copy()


def make_goal_images(
    env: MetaWorldGoalEnv, seed: int, source: str = "protocol", max_steps: int | None = None,
) -> tuple[GoalImages, dict[str, Any], dict[str, Any]]:
    """Goal images for ``seed``; leaves ``env`` freshly reset to ``seed``.

    ``max_steps`` overrides the expert's budget (default: the task's protocol budget,
    or 100 steps for ``jepa_wms``). Returns ``(goal_images, observation, info)`` where
    the last two are what ``env.reset(seed=seed)`` returned after the expert run.
    """
    unwrapped = env.unwrapped
    if not isinstance(unwrapped, MetaWorldGoalEnv):
        raise TypeError("goal images need a MetaWorldGoalEnv")
    if source not in GOAL_SOURCES:
        raise ValueError(f"goal source {source!r}; valid: {list(GOAL_SOURCES)}")
    if source == "jepa_wms":
        goal = _jepa_wms_goal(unwrapped, seed, max_steps or JEPA_WMS_STEPS)
    else:
        goal = _protocol_goal(unwrapped, seed, max_steps or EPISODE_BUDGET[unwrapped.task])
    observation, info = env.reset(seed=seed)
    return goal, observation, info


def _protocol_goal(env: MetaWorldGoalEnv, seed: int, budget: int) -> GoalImages:
    expert = ScriptedExpert(env.task, seed=seed)
    phases = SUBGOAL_PHASES[env.task]
    observation, _ = env.reset(seed=seed)
    object_start_z = float(env.privileged_obs[6])
    phase = "approach"
    # (step at which the phase frame was seen, phase, frame, truth)
    phase_frames: list[tuple[int, str, dict[str, np.ndarray], np.ndarray]] = []
    first_success: int | None = None
    best: tuple[float, int, dict[str, Any], np.ndarray] | None = None  # distance, step, obs, truth
    for step in range(1, budget + 1):
        privileged = env.privileged_obs
        action = expert.aimed_action(privileged, env.task_point())
        new_phase = expert_phase(env.task, privileged, action, object_start_z)
        if new_phase != phase and new_phase in phases and new_phase not in [p for _, p, _, _ in phase_frames]:
            # The frame *before* acting in the new phase shows where the phase begins.
            phase_frames.append((step - 1, new_phase, observation["images"], _truth(env)))
        phase = new_phase
        observation, _, _, _, info = env.step(action)
        if info["success"]:
            first_success = first_success or step
            distance = float(info["goal_distance_m"])
            if best is None or distance < best[0]:  # strict: the earliest frame on ties
                best = (distance, step, observation, _truth(env))
    if best is None:
        raise GoalNotReachedError(
            f"the task-aimed scripted expert did not solve {env.task!r} from seed {seed} "
            f"in {budget} steps")
    distance, goal_step, goal_observation, goal_truth = best
    kept = [(p, frame, truth, step) for step, p, frame, truth in phase_frames if step < goal_step]
    return GoalImages(
        seed=seed,
        goal=goal_observation["images"],
        goal_state=goal_observation["state"].copy(),
        subgoals=[frame for _, frame, _, _ in kept],
        subgoal_phases=[p for p, _, _, _ in kept],
        subgoal_steps=[step for _, _, _, step in kept],
        expert_steps=int(first_success or 0),
        goal_step=goal_step,
        goal_distance_m=distance,
        source="protocol",
        subgoal_truth=[truth for _, _, truth, _ in kept],
        goal_truth=goal_truth,
    )


def _jepa_wms_goal(env: MetaWorldGoalEnv, seed: int, steps: int) -> GoalImages:
    expert = ScriptedExpert(env.task, seed=seed)
    observation, _ = env.reset(seed=seed)
    first_success = 0
    for step in range(1, steps + 1):
        observation, _, _, _, info = env.step(expert.expert_action(env.privileged_obs))
        if info["success"] and not first_success:
            first_success = step
    return GoalImages(
        seed=seed,
        goal=observation["images"],
        goal_state=observation["state"].copy(),
        expert_steps=first_success,
        goal_step=steps,
        goal_distance_m=float(info["goal_distance_m"]),
        source="jepa_wms",
        goal_truth=_truth(env),
    )
