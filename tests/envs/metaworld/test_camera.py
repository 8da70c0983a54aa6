"""``project_to_camera``: a scene point to the pixel where the renderer draws it."""

import mujoco
import numpy as np
import pytest

from envs.metaworld.camera import project_to_camera, target_position
from envs.metaworld.env import CAMERA_VIEWS, MetaWorldGoalEnv


def _goal_marker_centre(env: MetaWorldGoalEnv, camera: str, height: int, width: int) -> tuple[float, float]:
    """Where the (normally hidden) goal marker is drawn: the centroid of the pixels that
    change when only the marker is made visible."""
    model, data = env._sim.model, env._sim.data
    goal = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, "goal")
    option = mujoco.MjvOption()
    option.sitegroup[:] = 1
    saved = model.site_rgba.copy()
    renderer = mujoco.Renderer(model, height, width)
    try:
        frames = []
        for alpha in (1.0, 0.0):
            model.site_rgba[:, 3] = 0.0
            model.site_rgba[goal, 3] = alpha
            renderer.update_scene(data, camera=env.camera_view(camera), scene_option=option)
            frames.append(renderer.render().astype(int))
    finally:
        model.site_rgba[:] = saved
        renderer.close()
    rows, columns = np.nonzero(np.abs(frames[0] - frames[1]).sum(-1) > 30)
    assert rows.size > 10, "the goal marker is not in view"
    return columns.mean() + 0.5, rows.mean() + 0.5  # pixel centres


@pytest.mark.parametrize("task, camera, size, moves", [
    ("reach", "oblique", 128, {}),
    ("push", "top", (96, 128), {}),
    ("reach", "oblique", 128, {"camera_offset": (4.0, 2.0, 0.0)}),  # a camera moved since recording
    ("push", "oblique", 96, {"camera_offset": (-3.0, 1.0, 0.05), "camera_jitter": (4.0, 2.0, 0.03)}),
    ("pick-place", "behind_gripper", 128, {}),  # a camera on the arm
])
def test_the_target_projects_onto_the_rendered_goal_marker(task, camera, size, moves):
    env = MetaWorldGoalEnv(task, image_size=32, cameras=(camera,), **moves)
    try:
        env.reset(seed=100_001)
        env.step(np.zeros(4, np.float32))  # the marker's site takes the target's place on a step
        target = target_position(env)
        np.testing.assert_allclose(target, env._sim.data.site("goal").xpos, atol=1e-6)
        height, width = (size, size) if isinstance(size, int) else size
        column, row = project_to_camera(env, target, camera, size)
        expected_column, expected_row = _goal_marker_centre(env, camera, height, width)
        assert abs(column - expected_column) < 1.0 and abs(row - expected_row) < 1.0
    finally:
        env.close()


def test_projection_centre_behind_and_bad_input():
    env = MetaWorldGoalEnv("reach", image_size=32)
    try:
        env.reset(seed=100_000)
        view = CAMERA_VIEWS["oblique"]
        column, row = project_to_camera(env, np.array(view.lookat), "oblique", 64)
        assert column == pytest.approx(32.0, abs=1e-4) and row == pytest.approx(32.0, abs=1e-4)
        # a point past the camera, away from where it looks: no pixel
        azimuth, elevation = np.radians(view.azimuth), np.radians(view.elevation)
        forward = np.array([np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth),
                            np.sin(elevation)])
        behind = np.array(view.lookat) - (view.distance + 0.5) * forward
        assert project_to_camera(env, behind, "oblique", 64) is None
        with pytest.raises(ValueError, match="unknown camera 'side'"):
            project_to_camera(env, np.zeros(3), "side", 64)
        with pytest.raises(ValueError, match="finite xyz"):
            project_to_camera(env, np.array([0.0, np.nan, 0.0]), "oblique", 64)
    finally:
        env.close()
