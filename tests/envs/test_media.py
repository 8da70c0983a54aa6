"""Video and image-strip helpers: text bars, target marks, stacking, MP4 writing."""

import av
import numpy as np
import pytest

from envs.media import draw_target, side_by_side, stack_vertically, text_bar, write_video


def test_text_bar_writes_legible_text_where_asked():
    bar = text_bar(300, 24, [(10, "step 12/200", (0, 0, 0))])
    assert bar.shape == (24, 300, 3) and bar.dtype == np.uint8
    dark = np.argwhere(bar.min(-1) < 100)
    assert len(dark) > 50  # glyphs, not a speck
    assert dark[:, 1].min() >= 9 and dark[:, 1].max() < 150  # from x=10, about 11 characters long
    assert 2 <= dark[:, 0].min() and dark[:, 0].max() <= 21  # vertically inside the bar
    red = text_bar(100, 20, [], background=(190, 0, 0))
    assert (red == [190, 0, 0]).all()
    with pytest.raises(ValueError, match="positive size"):
        text_bar(0, 20, [])


def test_draw_target_rings_the_point_on_a_copy():
    image = np.full((64, 64, 3), 90, np.uint8)
    marked = draw_target(image, 20.5, 40.5, radius=6)
    assert (image == 90).all()  # the input is untouched
    yellow = np.argwhere((marked[..., 0] > 200) & (marked[..., 1] > 180) & (marked[..., 2] < 80))
    assert np.allclose(yellow.mean(0), [40, 20], atol=1.0)
    assert (marked[40, 20] == 90).all()  # the centre itself stays visible
    assert (draw_target(image, 70.0, 10.0) == 90).all()  # outside the image: nothing drawn


def test_stacking_checks_sizes():
    a, b = np.zeros((4, 6, 3), np.uint8), np.ones((2, 6, 3), np.uint8)
    assert stack_vertically([a, b]).shape == (6, 6, 3)
    with pytest.raises(ValueError, match="image 1 is 5 px wide, expected 6"):
        stack_vertically([a, np.zeros((2, 5, 3), np.uint8)])
    with pytest.raises(ValueError, match="image 1 is 2 px tall, expected 4"):
        side_by_side([a, b])


def test_write_video_writes_every_frame_at_an_even_size(tmp_path):
    frames = [np.full((33, 45, 3), 10 * i, np.uint8) for i in range(5)]
    path = write_video(tmp_path / "v.mp4", frames, fps=20)
    with av.open(str(path)) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(decoded) == 5 and decoded[0].shape == (32, 44, 3)
    assert abs(int(decoded[4].mean()) - 40) <= 2
    assert not list(tmp_path.glob(".*"))  # no temporary left
    with pytest.raises(ValueError, match="no frames"):
        write_video(tmp_path / "empty.mp4", [])


def test_write_video_leaves_no_temporary_file_on_error_and_keeps_the_earlier_video(tmp_path):
    path = tmp_path / "episode.mp4"
    write_video(path, [np.zeros((16, 16, 3), np.uint8)] * 3)
    before = path.read_bytes()

    def frames_then_fault():
        yield np.zeros((16, 16, 3), np.uint8)
        raise RuntimeError("renderer died")

    with pytest.raises(RuntimeError, match="renderer died"):
        write_video(path, frames_then_fault())
    with pytest.raises(ValueError, match="no frames"):
        write_video(path, [])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["episode.mp4"]
    assert path.read_bytes() == before
