"""Goal-image Meta-World v3 tasks as Gymnasium envs.

One env wraps one Meta-World v3 task (reach, push, pick-place) and exposes what a
latent planner sees: camera image(s) rendered from a fixed, upright free camera with
the goal marker hidden, and a 4-D proprio state (hand xyz, gripper opening). The
4-D action is Meta-World's own (end-effector dx, dy, dz, gripper) in [-1, 1].

The simulator's success flag is reported in ``info["success"]`` but never ends an
episode: the evaluation protocol runs the full step budget and judges the last step.

Rendering goes through ``mujoco.Renderer`` with shadows and multisampling off, which
is ~8x cheaper than Meta-World's default visual settings (measured: ~9 ms against ~70 ms
per 64 px frame).
"""

from __future__ import annotations

import atexit
import os
import weakref
from typing import Any

# EGL renders offscreen without a display; respect a user's explicit choice.
os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium import spaces

# Names, budgets, seeds and camera views live in a module that configs import cheaply.
from envs.metaworld.tasks import (  # noqa: F401 (re-exported)
    ACTION_NAMES,
    BODY_CAMERAS,
    CAMERA_NAMES,
    CAMERA_VIEWS,
    EPISODE_BUDGET,
    EVAL_SEED_START,
    OBJECT_NAMES,
    SEED_LIMIT,
    STATE_AND_OBJECT_NAMES,
    STATE_NAMES,
    TASKS,
    TASKS_WITH_OBJECT,
    TUNING_SEED_START,
    CameraView,
    check_camera_move,
    seed_split,
)

# Envs with an open renderer. Their EGL contexts must be freed before MuJoCo's own
# exit hook terminates the EGL display, else errors are printed at exit. atexit runs
# hooks last-in first-out, so ours is registered after the first renderer exists
# (which is when MuJoCo registers its hook).
_OPEN_ENVS: weakref.WeakSet[MetaWorldGoalEnv] = weakref.WeakSet()
_exit_hook_registered = False


def _close_renderers() -> None:
    for env in list(_OPEN_ENVS):
        env.close()


def _body_camera(model: mujoco.MjModel, name: str) -> mujoco.MjvCamera:
    """The model's own camera ``name`` (one fixed to a body: it moves with it)."""
    camera = mujoco.MjvCamera()
    camera.type = mujoco.mjtCamera.mjCAMERA_FIXED
    camera.fixedcamid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, name)
    if camera.fixedcamid < 0:
        raise ValueError(f"this Meta-World model has no camera {name!r}")
    return camera


def _make_camera(view: CameraView, move: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> mujoco.MjvCamera:
    """A free camera of ``view`` moved by ``move`` (azimuth and elevation degrees, distance metres)."""
    camera = mujoco.MjvCamera()
    camera.type = mujoco.mjtCamera.mjCAMERA_FREE
    camera.lookat[:] = view.lookat
    camera.azimuth = view.azimuth + move[0]
    camera.elevation = view.elevation + move[1]
    camera.distance = view.distance + move[2]
    return camera


class MetaWorldGoalEnv(gym.Env):
    """A Meta-World v3 task with image observations, for goal-image planning.

    Observation: ``{"images": {camera: uint8 (H, W, 3)}, "state": float32 (4,)}``.
    Action: float32 (4,) in [-1, 1]. ``reset(seed=s)`` places objects and goal from
    ``s`` alone, so the same seed always gives the same scene.

    Cameras: the free views of ``CAMERA_VIEWS`` (``oblique``, ...) and the cameras the
    arm carries, ``BODY_CAMERAS`` (``wrist``: between the fingers, looking down;
    ``behind_gripper``), which move with the hand.

    A camera that is not quite where it was: ``camera_offset`` moves every free view by
    ``[azimuth degrees, elevation degrees, distance metres]`` for good (a camera knocked
    since the data were recorded); ``camera_jitter`` moves it at each reset by a uniform
    draw within ``+-camera_jitter`` per component, drawn from the episode seed (so a seed
    always gives the same view), for recording data under small camera moves. Both are
    limited to ``CAMERA_MOVE_LIMITS`` (30 degrees, 20 degrees, 0.3 m).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 80}

    def __init__(
        self,
        task: str = "reach",
        image_size: int = 64,
        cameras: tuple[str, ...] | list[str] = ("oblique",),
        step_budget: int | None = None,
        render_mode: str | None = "rgb_array",
        camera_offset: tuple[float, float, float] | list[float] = (0.0, 0.0, 0.0),
        camera_jitter: tuple[float, float, float] | list[float] = (0.0, 0.0, 0.0),
    ) -> None:
        from metaworld.env_dict import ALL_V3_ENVIRONMENTS  # heavy import, kept local

        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; valid tasks: {sorted(TASKS)}")
        if not 16 <= int(image_size) <= 512:
            raise ValueError(f"image_size must be in [16, 512], got {image_size}")
        # No cameras: a state-only env (observations carry no images, nothing renders),
        # for baselines that never look, like the random and scripted-expert references.
        cameras = tuple(cameras)
        unknown = [c for c in cameras if c not in CAMERA_NAMES]
        if unknown:
            raise ValueError(f"unknown camera(s) {unknown}; valid cameras: {list(CAMERA_NAMES)}")
        if step_budget is not None and step_budget < 1:
            raise ValueError(f"step_budget must be >= 1, got {step_budget}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be 'rgb_array' or None, got {render_mode!r}")
        self.camera_offset = check_camera_move("camera_offset", camera_offset)
        self.camera_jitter = check_camera_move("camera_jitter", camera_jitter, spread=True)

        self.task = task
        self.image_size = int(image_size)
        self.cameras = cameras
        self.step_budget = int(step_budget if step_budget is not None else EPISODE_BUDGET[task])
        self.render_mode = render_mode

        sim = ALL_V3_ENVIRONMENTS[TASKS[task]]()
        # What Meta-World's goal-observable constructor does, but with the scene drawn
        # from the env's own seeded generator so reset(seed) is reproducible.
        sim._partially_observable = False
        del sim.sawyer_observation_space  # cached property: recompute with the goal visible
        sim._set_task_called = True
        sim._freeze_rand_vec = False
        sim.seeded_rand_vec = True
        self._sim = sim

        model = sim.model
        model.vis.quality.shadowsize = 0
        model.vis.quality.offsamples = 0
        self._renderer: mujoco.Renderer | None = None
        self._scene_option = mujoco.MjvOption()
        self._scene_option.sitegroup[:] = 0  # hides the goal marker and every other site
        self._camera_objects = {name: _make_camera(CAMERA_VIEWS[name], self.camera_offset) for name in CAMERA_VIEWS}
        for name, model_camera in BODY_CAMERAS.items():  # fixed to the hand: offsets and jitter do not apply
            self._camera_objects[name] = _body_camera(model, model_camera)

        size = self.image_size
        self.observation_space = spaces.Dict(
            {
                "images": spaces.Dict(
                    {c: spaces.Box(0, 255, (size, size, 3), np.uint8) for c in cameras}
                ),
                "state": spaces.Box(-np.inf, np.inf, (4,), np.float32),
            }
        )
        self.action_space = spaces.Box(-1.0, 1.0, (4,), np.float32)
        self.dt = float(sim.dt)
        self.metadata = {**self.metadata, "render_fps": int(round(1.0 / self.dt))}

        self._privileged_obs: np.ndarray | None = None
        self._steps = 0
        self._seed: int | None = None

    # ------------------------------------------------------------------ gym API
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        super().reset(seed=seed)
        if seed is None:
            # Draw a scene seed from the env's generator; gymnasium seeds that on the
            # first reset, so an unseeded env is still reproducible through it.
            seed = int(self.np_random.integers(0, 2**31 - 1))
        self._seed = int(seed)
        self._sim.seed(self._seed)
        self._privileged_obs, _ = self._sim.reset()
        self._steps = 0
        if any(self.camera_jitter):
            self._move_cameras()
        return self._observation(), {"seed": self._seed, "success": False}

    def step(self, action: np.ndarray) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        if self._privileged_obs is None:
            raise RuntimeError("call reset() before step()")
        action = np.asarray(action, dtype=np.float32)
        if action.shape != (4,):
            raise ValueError(f"action must have shape (4,), got {action.shape}")
        if not np.all(np.isfinite(action)):
            raise ValueError(f"action has non-finite values: {action}")
        action = np.clip(action, -1.0, 1.0)
        self._privileged_obs, reward, _, _, sim_info = self._sim.step(action)
        self._steps += 1
        info = {
            "success": bool(sim_info["success"]),
            # Meta-World's distance behind the success flag, in metres: hand to target for
            # reach, object to target for push and pick-place. A diagnostic for reports;
            # never shown to a world model or planner.
            "goal_distance_m": float(sim_info["obj_to_target"]),
            "seed": self._seed,
            "step": self._steps,
        }
        truncated = self._steps >= self.step_budget
        return self._observation(), float(reward), False, truncated, info

    def render(self) -> np.ndarray | None:
        if self.render_mode is None or not self.cameras:
            return None
        return self._render_camera(self.cameras[0])

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
        super().close()

    # ------------------------------------------------------------ our additions
    @property
    def privileged_obs(self) -> np.ndarray:
        """Meta-World's full 39-D observation (object and goal poses) for scripted
        experts. Never shown to a world model or planner."""
        if self._privileged_obs is None:
            raise RuntimeError("call reset() first")
        return self._privileged_obs

    @property
    def episode_seed(self) -> int | None:
        return self._seed

    @property
    def steps(self) -> int:
        return self._steps

    def state(self) -> np.ndarray:
        """Proprio state: hand xyz and gripper opening, float32 (4,)."""
        return np.asarray(self.privileged_obs[:4], dtype=np.float32)

    def object_position(self) -> np.ndarray:
        """The task object's xyz, float32 (3,). Privileged like ``privileged_obs``: it is
        recorded as a training label (``observation.environment_state``, for state
        readouts fit on the latents), never given to a world model or planner."""
        return np.asarray(self.privileged_obs[4:7], dtype=np.float32)

    def task_point(self) -> np.ndarray:
        """Where success is judged, xyz float32 (3,): the fingers' centre (Meta-World's
        ``tcp_center``, about 4.4 cm below the hand) for reach, the object for push and
        pick-place. Privileged, for the task-aimed scripted expert; never given to a world
        model or planner."""
        if self._privileged_obs is None:
            raise RuntimeError("call reset() first")
        if self.task in TASKS_WITH_OBJECT:
            return self.object_position()
        return np.asarray(self._sim.tcp_center, dtype=np.float32).copy()

    def camera_view(self, camera: str) -> mujoco.MjvCamera:
        """The camera ``camera`` (any of ``CAMERA_NAMES``) renders from now: a free view
        with ``camera_offset`` and this episode's ``camera_jitter`` applied, or one of
        ``BODY_CAMERAS``, which rides on the hand."""
        if camera not in self._camera_objects:
            raise ValueError(f"unknown camera {camera!r}; valid cameras: {list(CAMERA_NAMES)}")
        return self._camera_objects[camera]

    def _move_cameras(self) -> None:
        """This episode's views: each camera moved by ``camera_offset`` plus a draw within
        ``+-camera_jitter`` from the episode seed (the camera's place in ``CAMERA_VIEWS``
        picks its own draw)."""
        for index, name in enumerate(CAMERA_VIEWS):
            draw = np.random.default_rng([self._seed, 0xCA3E7A, index]).uniform(-1.0, 1.0, 3)
            move = tuple(o + j * d for o, j, d in zip(self.camera_offset, self.camera_jitter, draw, strict=True))
            self._camera_objects[name] = _make_camera(CAMERA_VIEWS[name], move)

    def images(self) -> dict[str, np.ndarray]:
        return {camera: self._render_camera(camera) for camera in self.cameras}

    def get_sim_state(self) -> tuple[np.ndarray, np.ndarray]:
        return self._sim.get_env_state()

    def _observation(self) -> dict[str, Any]:
        return {"images": self.images(), "state": self.state()}

    def _render_camera(self, camera: str) -> np.ndarray:
        if self._renderer is None:
            self._renderer = mujoco.Renderer(self._sim.model, self.image_size, self.image_size)
            _OPEN_ENVS.add(self)
            global _exit_hook_registered
            if not _exit_hook_registered:
                atexit.register(_close_renderers)
                _exit_hook_registered = True
        self._renderer.update_scene(
            self._sim.data, camera=self._camera_objects[camera], scene_option=self._scene_option
        )
        return self._renderer.render().copy()
