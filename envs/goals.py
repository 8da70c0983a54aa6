"""Goal images by the evaluation protocol (DESIGN.md).

reset(seed), run the noise-free scripted expert until the simulator reports success,
then a few settle steps; the last frame is the goal image. The frames where the
expert's phase changes (grasp, lift) are kept as sub-goal images. Then reset(seed)
again, so the episode starts from exactly the state the goal was made from.

``phases`` can ask for other phase changes (``envs.experts.expert_phase``): ``descend``,
the hand over the object before it comes down, is a diagnostic beyond the protocol.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from envs.experts import ScriptedExpert, expert_phase
from envs.metaworld_goal import MetaWorldGoalEnv

PROTOCOL_PHASES = ("grasp", "lift")
"""The phases whose first frames are the protocol's sub-goal images."""
SUBGOAL_PHASES = ("descend", "grasp", "lift")
"""Every phase change a sub-goal image can be taken at, in the expert's order."""

SETTLE_STEPS = 5
"""Expert steps after the first success before the goal frame is taken (the protocol's
"a few settle steps")."""


class GoalNotReachedError(RuntimeError):
    """The scripted expert did not solve the task from this seed."""


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
    """The phase each sub-goal frame starts (``grasp``, ``lift``)."""
    expert_steps: int = 0
    """Steps the expert took to first success."""
    goal_distance_m: float | None = None
    """The env's success distance at the goal frame (``info["goal_distance_m"]``: hand or
    object to target, metres). The expert stops short of the target's centre, so this
    says how close to the success radius the goal image itself is."""
    subgoal_truth: list[np.ndarray] = field(default_factory=list)
    """Hand xyz, gripper opening and object xyz at each sub-goal frame, float32 (7,).
    Privileged, like ``goal_distance_m``: for diagnostics (how well a readout reads the
    goal frames), never shown to an agent."""
    goal_truth: np.ndarray | None = None
    """The same at the final goal frame."""


def make_goal_images(
    env: MetaWorldGoalEnv, seed: int, settle_steps: int = SETTLE_STEPS, max_steps: int = 500,
    phases: Sequence[str] = PROTOCOL_PHASES,
) -> tuple[GoalImages, dict[str, Any], dict[str, Any]]:
    """Goal images for ``seed``; leaves ``env`` freshly reset to ``seed``.

    Returns ``(goal_images, observation, info)`` where the last two are what
    ``env.reset(seed=seed)`` returned after the expert run.
    """
    unwrapped = env.unwrapped
    assert isinstance(unwrapped, MetaWorldGoalEnv), "goal images need a MetaWorldGoalEnv"
    unknown = sorted(set(phases) - set(SUBGOAL_PHASES))
    if unknown:
        raise ValueError(f"sub-goal phases {unknown}; valid: {list(SUBGOAL_PHASES)}")
    expert = ScriptedExpert(unwrapped.task, seed=seed)

    observation, _ = env.reset(seed=seed)
    object_start_z = float(unwrapped.privileged_obs[6])
    phase = "approach"
    subgoals: list[dict[str, np.ndarray]] = []
    kept: list[str] = []
    truths: list[np.ndarray] = []
    success_step: int | None = None
    # The expert runs on the raw sim budget, not the evaluation budget.
    for step in range(1, max_steps + 1):
        privileged = unwrapped.privileged_obs
        action = expert.expert_action(privileged)
        new_phase = expert_phase(unwrapped.task, privileged, action, object_start_z)
        if (new_phase != phase and new_phase in phases and new_phase not in kept
                and success_step is None):
            # The frame *before* acting in the new phase shows where the phase begins.
            subgoals.append(observation["images"])
            kept.append(new_phase)
            truths.append(np.asarray(privileged[:7], dtype=np.float32).copy())
        phase = new_phase
        observation, _, _, _, info = unwrapped.step(action)
        if info["success"] and success_step is None:
            success_step = step
        if success_step is not None and step >= success_step + settle_steps:
            break
    if success_step is None:
        raise GoalNotReachedError(
            f"scripted expert did not solve {unwrapped.task!r} from seed {seed} in {max_steps} steps"
        )
    goal = GoalImages(
        seed=seed,
        goal=observation["images"],
        goal_state=observation["state"].copy(),
        subgoals=subgoals,
        subgoal_phases=kept,
        expert_steps=success_step,
        goal_distance_m=float(info["goal_distance_m"]) if "goal_distance_m" in info else None,
        subgoal_truth=truths,
        goal_truth=np.asarray(unwrapped.privileged_obs[:7], dtype=np.float32).copy(),
    )
    observation, info = env.reset(seed=seed)
    return goal, observation, info
