"""Small helpers to write videos and image strips people look at."""

from __future__ import annotations

import functools
import os
import uuid
from collections.abc import Iterable
from pathlib import Path

import av
import numpy as np


def upscale(image: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour upscale of an (H, W, C) image, so tiny frames stay crisp."""
    if factor <= 1:
        return image
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


def side_by_side(images: list[np.ndarray], gap: int = 2) -> np.ndarray:
    """Join equally tall (H, W, 3) uint8 images left to right with a white gap."""
    height = images[0].shape[0]
    spacer = np.full((height, gap, 3), 255, dtype=np.uint8)
    parts: list[np.ndarray] = []
    for index, image in enumerate(images):
        if image.shape[0] != height:
            raise ValueError(f"image {index} is {image.shape[0]} px tall, expected {height}")
        if index:
            parts.append(spacer)
        parts.append(image)
    return np.concatenate(parts, axis=1)


def stack_vertically(images: list[np.ndarray]) -> np.ndarray:
    """Join equally wide (H, W, 3) uint8 images top to bottom."""
    width = images[0].shape[1]
    for index, image in enumerate(images):
        if image.shape[1] != width:
            raise ValueError(f"image {index} is {image.shape[1]} px wide, expected {width}")
    return np.concatenate(images, axis=0)


@functools.lru_cache(maxsize=8)
def _font(size: int):
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def text_bar(width: int, height: int, texts: list[tuple[int, str, tuple[int, int, int]]],
             background: tuple[int, int, int] = (255, 255, 255), font_size: int | None = None) -> np.ndarray:
    """A (height, width, 3) uint8 strip with each ``(x, text, colour)`` written at
    column ``x``, vertically centred, in Pillow's default font (``font_size`` px tall;
    by default 60% of the strip). Text past the right edge is cut off."""
    from PIL import Image, ImageDraw

    if width < 1 or height < 1:
        raise ValueError(f"a text bar needs a positive size, got {width}x{height}")
    image = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(image)
    font = _font(font_size or max(6, int(0.6 * height)))
    for x, text, colour in texts:
        draw.text((x, height / 2), text, fill=colour, font=font, anchor="lm")
    return np.asarray(image)


def draw_target(image: np.ndarray, column: float, row: float, radius: int = 8) -> np.ndarray:
    """A copy of ``image`` with a ring and cross (yellow on black, visible on any
    background) centred on the continuous pixel position ``(column, row)``; a position
    outside the image draws nothing."""
    from PIL import Image, ImageDraw

    marked = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8))
    height, width = image.shape[:2]
    if not (0 <= column < width and 0 <= row < height):
        return np.asarray(marked)
    draw = ImageDraw.Draw(marked)
    box = [column - radius, row - radius, column + radius, row + radius]
    for colour, line in (((0, 0, 0), 4), ((255, 230, 0), 2)):
        draw.ellipse(box, outline=colour, width=line)
        draw.line([column - 2 * radius, row, column - radius / 2, row], fill=colour, width=line)
        draw.line([column + radius / 2, row, column + 2 * radius, row], fill=colour, width=line)
        draw.line([column, row - 2 * radius, column, row - radius / 2], fill=colour, width=line)
        draw.line([column, row + radius / 2, column, row + 2 * radius], fill=colour, width=line)
    return np.asarray(marked)


def quiet_ffmpeg() -> None:
    """Keep FFmpeg's per-file encoder statistics off the terminal (errors still show).

    Both levels: PyAV's Python-side filter, and FFmpeg's own, which is what applies
    after lerobot's video writer restores FFmpeg's default log callback."""
    av.logging.set_level(av.logging.ERROR)
    av.logging.set_libav_level(av.logging.ERROR)


def write_video(path: str | Path, frames: Iterable[np.ndarray], fps: float = 20.0) -> Path:
    """Write uint8 (H, W, 3) frames to an H.264 MP4, atomically (temp file + rename)."""
    quiet_ffmpeg()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a unique temporary name: two writers of one path never share a file; removed on error
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex}.tmp{path.suffix}")
    count = 0
    try:
        container = av.open(str(tmp), mode="w")
        stream = None
        try:
            for frame in frames:
                frame = np.ascontiguousarray(frame, dtype=np.uint8)
                if stream is None:
                    # H.264 with yuv420p needs even sizes.
                    height, width = frame.shape[0] // 2 * 2, frame.shape[1] // 2 * 2
                    stream = container.add_stream("libx264", rate=int(round(fps)))
                    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
                    stream.options = {"crf": "20", "preset": "veryfast"}
                frame = frame[: stream.height, : stream.width]
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    container.mux(packet)
                count += 1
            if stream is not None:
                for packet in stream.encode():
                    container.mux(packet)
        finally:
            container.close()
        if count == 0:
            raise ValueError(f"no frames to write to {path}")
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)
    return path
