"""Reading raw media: any video PyAV can open, folders of frames, single images.

Returns RGB uint8 arrays; every failure is a ``MediaError`` whose message names the file.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .adapters.base import IMAGE_EXTS


class MediaError(ValueError):
    """A file could not be decoded; the message says which and why."""


def read_image(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB, upright (EXIF orientation applied); 16-bit and 32-bit greyscale
    scaled to 8 bits (PIL's ``convert("RGB")`` would clip them to white)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return _rgb8(ImageOps.exif_transpose(im))
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise MediaError(f"{path}: unreadable image ({err.__class__.__name__}: {err})") from None


def _rgb8(im) -> np.ndarray:
    if im.mode.startswith("I;16") or im.mode in ("I", "F"):
        a = np.asarray(im).astype(np.float64)
        if im.mode == "F":
            top = 1.0 if a.max() <= 1.0 else 255.0
        else:  # 16-bit PNG/TIFF ("I;16*"); 32-bit "I" holds 16-bit values unless it fits 8
            top = 65535.0 if im.mode.startswith("I;16") or a.max() > 255 else 255.0
        grey = np.clip(np.round(a / top * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    return np.asarray(im.convert("RGB"))


def upright(rgb: np.ndarray, rotation: int | float | None) -> np.ndarray:
    """A decoded frame turned as its display matrix says (``rotation``: degrees counterclockwise,
    PyAV's ``VideoFrame.rotation``; phones store portrait video as landscape plus -90)."""
    k = round((rotation or 0) / 90) % 4
    return np.ascontiguousarray(np.rot90(rgb, k)) if k else rgb


def _open_video(target: Any, name: Any, failure: str, **options: Any) -> tuple[Any, Any, float]:
    """(container, its first video stream, frames per second; 25 when unknown); a failure is a
    ``MediaError`` naming ``name``."""
    import av

    try:
        container = av.open(target, mode="r", **options)
    except (av.error.FFmpegError, OSError, ValueError) as err:
        raise MediaError(f"{name}: {failure} ({err.__class__.__name__}: {err})") from None
    if not container.streams.video:
        container.close()
        raise MediaError(f"{name}: no video stream")
    stream = container.streams.video[0]
    return container, stream, float(stream.average_rate or stream.guessed_rate or 25.0)


def iter_live(source: str) -> tuple[float, Iterator[np.ndarray]]:
    """A live source as PyAV opens it (a camera device such as ``/dev/video0``, an RTSP/HTTP
    URL, ``-`` for a stream on stdin): frames per second (25 when the source does not say) and
    a generator of (H, W, 3) uint8 RGB frames as they arrive. It ends when the source does; a
    source that cannot be opened is a ``MediaError`` naming it."""
    import sys

    import av

    target = sys.stdin.buffer if source == "-" else source
    container, stream, fps = _open_video(target, source, "cannot open the live source",
                                         format="v4l2" if source.startswith("/dev/video") else None)

    def frames() -> Iterator[np.ndarray]:
        try:
            for frame in container.decode(stream):
                yield upright(frame.to_ndarray(format="rgb24"), getattr(frame, "rotation", 0))
        except (av.error.FFmpegError, OSError, ValueError) as err:
            raise MediaError(f"{source}: the live source broke off ({err.__class__.__name__}: {err})") from None
        finally:
            container.close()

    return fps, frames()


def iter_video(path: Path) -> tuple[float, Iterator[np.ndarray]]:
    """Frames per second and a generator of (H, W, 3) uint8 RGB frames, decoded one at a time
    (for long inputs). Opening and every decoding failure raise ``MediaError`` naming the file;
    a video that breaks off says after how many frames."""
    import av

    container, stream, fps = _open_video(str(path), path, "unreadable video")
    stream_seconds = float(stream.duration * stream.time_base) if stream.duration and stream.time_base else None
    only_video = len(container.streams) == 1  # otherwise the container's duration may be the audio's
    declared = declared_frames(stream.frames, stream_seconds or (container.duration / 1e6 if only_video and container.duration else None), fps)

    def frames() -> Iterator[np.ndarray]:
        count, shape = 0, None
        try:
            for frame in container.decode(stream):
                rgb = upright(frame.to_ndarray(format="rgb24"), getattr(frame, "rotation", 0))
                if shape is not None and rgb.shape != shape:
                    raise MediaError(f"{path}: frame size changes within the video ({shape[:2]} then {rgb.shape[:2]})")
                shape = rgb.shape
                count += 1
                yield rgb
        except MediaError:
            raise
        except (av.error.FFmpegError, OSError, ValueError) as err:
            what = "unreadable video" if count == 0 else f"video breaks off after {count} frames"
            raise MediaError(f"{path}: {what} ({err.__class__.__name__}: {err})") from None
        finally:
            container.close()
        if count == 0:
            raise MediaError(f"{path}: video has no decodable frames")
        if declared is not None and count < TRUNCATED * declared:
            raise MediaError(f"{path}: video breaks off after {count} frames (its header declares about {declared}); "
                             "the file is probably truncated")

    return fps, frames()


TRUNCATED = 0.9  # fewer decoded frames than this share of the declared count means a cut-off file


def declared_frames(stream_frames: int, seconds: float | None, fps: float) -> int | None:
    """Frames the container promises: the stream's frame count (MP4), else the video's duration x
    fps (WebM/Matroska store a duration, not a count); None when neither is known."""
    if stream_frames and stream_frames > 0:
        return int(stream_frames)
    if seconds and seconds > 0 and fps > 0:
        return int(seconds * fps)
    return None


def read_video(path: Path) -> tuple[np.ndarray, float]:
    """(T, H, W, 3) uint8 RGB frames and frames per second. A file that cannot be decoded to
    the end is an error (the sample is reported and skipped, never stored half)."""
    fps, frames = iter_video(path)
    return np.stack(list(frames)), fps


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
