"""Where a 3-D point of the scene lands in a named camera's image.

For videos people watch: marking the task's target in a copy of the camera frame. The
images a world model sees are never drawn on.

```python
env = MetaWorldGoalEnv("reach", image_size=64)
env.reset(seed=100_000)
column, row = project_to_camera(env, target_position(env), "oblique", 256)
```
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import mujoco
import numpy as np

if TYPE_CHECKING:
    from envs.metaworld.env import MetaWorldGoalEnv


def target_position(env: MetaWorldGoalEnv) -> np.ndarray:
    """The task's target xyz (where reach's fingers, push's puck or pick-place's block
    must go), float64 (3,): the last three values of Meta-World's observation.
    Privileged: for videos and diagnostics, never given to a world model or planner."""
    return np.asarray(env.privileged_obs[-3:], dtype=np.float64).copy()


def project_to_camera(env: MetaWorldGoalEnv, point: np.ndarray, camera: str,
                      size: int | tuple[int, int]) -> tuple[float, float] | None:
    """The pixel ``(column, row)`` at which world point ``point`` (xyz, metres) appears
    in ``camera``'s image of ``size`` pixels (a square side, or ``(height, width)``).

    Coordinates are continuous: the image spans ``[0, width] x [0, height]``, pixel
    ``(i, j)`` covers ``[j, j + 1) x [i, i + 1)``, and a point may project outside it.
    None for a point behind the camera (or on its near plane). Uses MuJoCo's own
    camera pose and frustum (``mjv_updateCamera``, the model's ``fovy``), as the
    renderer does, from where ``camera`` is now (``env.camera_view``: moved by the env's
    camera offset and this episode's jitter, if any; a camera on the arm where the hand is)."""
    view = env.unwrapped.camera_view(camera)
    height, width = (size, size) if isinstance(size, int) else size
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got {size}")
    point = np.asarray(point, dtype=np.float64)
    if point.shape != (3,) or not np.all(np.isfinite(point)):
        raise ValueError(f"point must be a finite xyz, got {point}")

    model, data = env.unwrapped._sim.model, env.unwrapped._sim.data
    scene = mujoco.MjvScene(model, maxgeom=0)  # only its camera is filled in
    mujoco.mjv_updateCamera(model, data, view, scene)
    # the two eyes sit ipd/2 either side of the head; a mono render looks from between them
    gl_camera = mujoco.mjv_averageCamera(scene.camera[0], scene.camera[1])
    forward = np.asarray(gl_camera.forward, dtype=np.float64)
    up = np.asarray(gl_camera.up, dtype=np.float64)
    right = np.cross(forward, up)
    relative = point - np.asarray(gl_camera.pos, dtype=np.float64)
    depth = float(relative @ forward)
    near = float(gl_camera.frustum_near)
    if depth <= near:
        return None
    # onto the near plane, then through the frustum the renderer uses (glFrustum)
    x_near, y_near = near * float(relative @ right) / depth, near * float(relative @ up) / depth
    bottom, top = float(gl_camera.frustum_bottom), float(gl_camera.frustum_top)
    half_width = float(gl_camera.frustum_width) or 0.5 * (top - bottom) * width / height
    left = float(gl_camera.frustum_center) - half_width
    column = (x_near - left) / (2 * half_width) * width
    row = (top - y_near) / (top - bottom) * height
    return column, row
