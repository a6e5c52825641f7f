"""Reading raw media: any video PyAV can open, folders of frames, single images.

Returns RGB uint8 arrays; every failure is a ``MediaError`` whose message names the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .adapters.base import IMAGE_EXTS


class MediaError(Exception):
    """A file could not be decoded; the message says which and why."""


def read_image(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise MediaError(f"{path}: unreadable image ({err.__class__.__name__}: {err})") from None


def read_video(path: Path) -> tuple[np.ndarray, float]:
    """(T, H, W, 3) uint8 RGB frames and frames per second. A file that cannot be decoded to
    the end is an error (the sample is reported and skipped, never stored half)."""
    import av

    frames: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise MediaError(f"{path}: no video stream")
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 25.0)
            for frame in container.decode(stream):
                frames.append(frame.to_ndarray(format="rgb24"))
    except MediaError:
        raise
    except (av.error.FFmpegError, OSError, ValueError) as err:
        if not frames:
            raise MediaError(f"{path}: unreadable video ({err.__class__.__name__}: {err})") from None
        raise MediaError(f"{path}: video breaks off after {len(frames)} frames ({err.__class__.__name__})") from None
    if not frames:
        raise MediaError(f"{path}: video has no decodable frames")
    if len({f.shape for f in frames}) != 1:
        raise MediaError(f"{path}: frame size changes within the video {sorted({f.shape[:2] for f in frames})}")
    return np.stack(frames), fps


def read_frame_folder(path: Path, fps: float = 25.0) -> tuple[np.ndarray, float]:
    """Frames sorted by file name; all must decode and share one size."""
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTS)
    if not files:
        raise MediaError(f"{path}: no image frames in folder")
    frames = [read_image(p) for p in files]
    shapes = {f.shape for f in frames}
    if len(shapes) != 1:
        raise MediaError(f"{path}: frames differ in size {sorted(shapes)}")
    return np.stack(frames), fps
