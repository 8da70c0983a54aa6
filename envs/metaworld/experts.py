"""Scripted experts for the goal-image tasks, with configurable exploration.

The experts are Meta-World's own hand-written policies; they read the privileged
39-D observation (object and goal poses). Exploration puts the recorded data off the
expert's path, which a world model needs to learn what *other* actions do:

- ``noise_std``: Gaussian noise added to every expert action;
- ``perturb_prob`` / ``perturb_steps``: at any step, with this probability, start a
  segment of ``perturb_steps`` (min, max) steps that holds one uniform random action;
- ``random_episode``: the whole episode is smoothed random actions (no expert).

``aimed_action`` is the task-aimed variant the evaluation protocol's goal images come
from (docs/protocol.md); recordings use the policies as they are.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from envs.metaworld.tasks import TASKS

# Meta-World's policies warn on every call that their own gains may be high; the env
# clips actions anyway, so the warning says nothing about our data.
warnings.filterwarnings("ignore", message=r"Constant\(s\) may be too high", category=UserWarning)

GOAL_XYZ = slice(36, 39)
"""The target's xyz in the privileged observation (its last three numbers)."""

_POLICY_CLASSES = {
    "reach": "SawyerReachV3Policy",
    "push": "SawyerPushV3Policy",
    "pick-place": "SawyerPickPlaceV3Policy",
}


@dataclass
class Exploration:
    """How far recorded actions stray from the scripted expert."""

    noise_std: float = 0.0
    """Std of Gaussian noise added to each expert action (actions are in [-1, 1])."""
    perturb_prob: float = 0.0
    """Per-step probability of starting a random-action segment."""
    perturb_steps: tuple[int, int] = (5, 15)
    """Inclusive range of a random-action segment's length, in steps."""
    random_episode: bool = False
    """Ignore the expert: the episode is smoothed uniform random actions."""

    def __post_init__(self) -> None:
        if self.noise_std < 0:
            raise ValueError(f"noise_std must be >= 0, got {self.noise_std}")
        if not 0.0 <= self.perturb_prob <= 1.0:
            raise ValueError(f"perturb_prob must be in [0, 1], got {self.perturb_prob}")
        low, high = self.perturb_steps
        if not 1 <= low <= high:
            raise ValueError(f"perturb_steps must be (min, max) with 1 <= min <= max, got {self.perturb_steps}")

    @property
    def is_expert(self) -> bool:
        return not self.random_episode and self.noise_std == 0 and self.perturb_prob == 0


class ScriptedExpert:
    """Meta-World's scripted policy for one task, plus exploration.

    ``act(privileged_obs)`` returns a float32 (4,) action in [-1, 1]. ``reset(seed)``
    reseeds the exploration noise so an episode's actions are reproducible.
    """

    def __init__(self, task: str, exploration: Exploration | None = None, seed: int = 0) -> None:
        import metaworld.policies as mw_policies  # heavy import, kept local

        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; valid tasks: {sorted(TASKS)}")
        self.task = task
        self.exploration = exploration or Exploration()
        self._policy = getattr(mw_policies, _POLICY_CLASSES[task])()
        self.reset(seed)

    def reset(self, seed: int) -> None:
        self._rng = np.random.default_rng(seed)
        self._segment_left = 0
        self._segment_action = np.zeros(4, dtype=np.float32)
        self._random_action = self._rng.uniform(-1, 1, 4).astype(np.float32)

    def expert_action(self, privileged_obs: np.ndarray) -> np.ndarray:
        """The noise-free expert action."""
        action = self._policy.get_action(privileged_obs)
        return np.clip(np.asarray(action, dtype=np.float32), -1.0, 1.0)

    def aimed_action(self, privileged_obs: np.ndarray, task_point: np.ndarray) -> np.ndarray:
        """The noise-free *task-aimed* expert action: Meta-World's policy, shown a goal
        moved so that ``task_point`` (the fingers' centre for reach, the object for push
        and pick-place: what success is judged on) arrives on the target, not the hand.

        Meta-World's policies steer the hand to the target, which leaves the fingers
        (reach) or the held block (pick-place) about 4 cm short of it. Shown the target
        shifted by ``hand - task_point`` at every step, the same policy closes that gap:
        with the point carried rigidly by the hand, the hand then stops where the point
        sits on the target. The shift changes only where the policy goes once its own
        phase logic heads for the goal (reach from the start; push and pick-place once
        the object is in hand)."""
        shifted = np.array(privileged_obs, dtype=np.float64, copy=True)
        offset = shifted[:3] - np.asarray(task_point, dtype=np.float64)
        if self.task == "push":
            # Push keeps the policy's own height: it presses the puck onto the table on its
            # way; aiming the hand higher by the puck's offset lets the puck ride up in the
            # fingers (measured: lifted 3 cm, then dropped off the target).
            offset[2] = 0.0
        shifted[GOAL_XYZ] = shifted[GOAL_XYZ] + offset
        return self.expert_action(shifted)

    def act(self, privileged_obs: np.ndarray) -> np.ndarray:
        exploration = self.exploration
        if exploration.random_episode:
            # A slowly drifting random action moves the arm around instead of jittering
            # in place, so random episodes cover the workspace.
            step = self._rng.uniform(-1, 1, 4).astype(np.float32)
            self._random_action = np.clip(0.8 * self._random_action + 0.4 * step, -1.0, 1.0)
            return self._random_action.copy()
        if self._segment_left > 0:
            self._segment_left -= 1
            return self._segment_action.copy()
        if exploration.perturb_prob > 0 and self._rng.random() < exploration.perturb_prob:
            low, high = exploration.perturb_steps
            self._segment_left = int(self._rng.integers(low, high + 1)) - 1
            self._segment_action = self._rng.uniform(-1, 1, 4).astype(np.float32)
            return self._segment_action.copy()
        action = self.expert_action(privileged_obs)
        if exploration.noise_std > 0:
            action = action + self._rng.normal(0.0, exploration.noise_std, 4).astype(np.float32)
        return np.clip(action, -1.0, 1.0).astype(np.float32)


PUSH_CONTACT_XY_M = 0.02
"""Meta-World's push expert steers the puck to the goal once the hand is this close to it
in x, y (to a point 5 mm before its centre in x) ..."""
PUSH_CONTACT_Z_M = 0.04
"""... and this close to it in height; before that it places the hand on the puck."""
LIFT_M = 0.03
"""pick-place's ``lift`` phase starts when the object is this far above where it started."""

SUBGOAL_PHASES: dict[str, tuple[str, ...]] = {
    "reach": (),
    "push": ("contact",),
    "pick-place": ("grasp", "lift"),
}
"""Per task, the expert's phase changes whose frames are the protocol's sub-goal images,
in the order the expert reaches them."""


def expert_phase(task: str, privileged_obs: np.ndarray, expert_action: np.ndarray, object_start_z: float) -> str:
    """The expert's phase, for sub-goal images.

    - pick-place: ``approach`` -> ``grasp`` (the expert closes the gripper, action[3] > 0)
      -> ``lift`` (the object is ``LIFT_M`` above where it started);
    - push: ``approach`` -> ``contact``, where the expert stops placing the hand on the
      puck and starts moving it to the goal (the hand within ``PUSH_CONTACT_XY_M`` of it
      in x, y and ``PUSH_CONTACT_Z_M`` in height: the policy's own switch);
    - reach: a single phase, ``approach``.
    """
    if task == "reach":
        return "approach"
    hand = np.asarray(privileged_obs[:3], dtype=float)
    puck = np.asarray(privileged_obs[4:7], dtype=float)
    if task == "push":
        aim = puck[:2] + (-0.005, 0.0)
        if (np.linalg.norm(hand[:2] - aim) <= PUSH_CONTACT_XY_M
                and abs(hand[2] - puck[2]) <= PUSH_CONTACT_Z_M):
            return "contact"
        return "approach"
    if puck[2] > object_start_z + LIFT_M:
        return "lift"
    if expert_action[3] > 0:
        return "grasp"
    return "approach"
