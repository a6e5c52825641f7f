"""Reading raw media: any video PyAV can open, folders of frames, single images.

Returns RGB uint8 arrays; every failure is a ``MediaError`` whose message names the file.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .adapters.base import IMAGE_EXTS
from .errors import InputError


class MediaError(InputError):
    """A file could not be decoded; the message says which and why."""


MAX_PIXELS = 4096 * 4096  # per frame or image (16.8 MP): far above any face dataset, far below a decompression bomb
MAX_FRAMES = 100_000  # per sample for ``s4d shards`` (over an hour at 25 fps): the output clip is held whole
PIXELS_ENV, FRAMES_ENV = "S4D_MAX_PIXELS", "S4D_MAX_FRAMES"  # set by ``s4d shards --max-pixels/--max-frames``


@dataclass(frozen=True)
class Limits:
    """What a file may declare before it is decoded: pixels per frame (width x height) and, for
    ``s4d shards`` (which holds the output clip whole), frames per video or frame folder
    (None: no frame limit, for callers that stream, like ``s4d predict``)."""

    max_pixels: int = MAX_PIXELS
    max_frames: int | None = None

    @classmethod
    def from_env(cls, frames: bool = False) -> "Limits":
        """The defaults, or what ``s4d shards --max-pixels/--max-frames`` put in the environment
        (inherited by its worker processes); ``frames``: also limit the frame count."""
        return cls(_env_int(PIXELS_ENV, MAX_PIXELS), _env_int(FRAMES_ENV, MAX_FRAMES) if frames else None)

    def check_size(self, name: Any, width: int, height: int) -> None:
        """A ``MediaError`` naming ``name`` when width x height is over ``max_pixels``."""
        if width * height > self.max_pixels:
            raise MediaError(
                f"{name}: declares {width}x{height} = {width * height} pixels per frame, over the limit of "
                f"{self.max_pixels}; if the file is genuine, raise it with --max-pixels (s4d shards) or {PIXELS_ENV}"
            )

    def check_frames(self, name: Any, frames: int | None, what: str = "declares") -> None:
        """A ``MediaError`` naming ``name`` when ``frames`` is over ``max_frames`` (if limited)."""
        if self.max_frames is not None and frames is not None and frames > self.max_frames:
            raise MediaError(
                f"{name}: {what} {frames} frames, over the limit of {self.max_frames} frames per sample; "
                f"if the file is genuine, raise it with --max-frames (s4d shards) or {FRAMES_ENV}"
            )


def decoder_options(max_pixels: int) -> dict[str, str]:
    """libavcodec options (a stream's ``codec_context.options``, set before decoding) that make
    the decoder itself refuse a frame far over ``max_pixels``: a backstop for a size change
    inside the bitstream. Loose (4x plus 1 MP) because decoders check their padded, aligned
    size (VP9: multiples of 64); the exact limit is checked on each decoded frame's size."""
    return {"max_pixels": str(4 * max_pixels + (1 << 20))}


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise InputError(f"{name}={text!r}: expected a positive whole number (a limit on declared media sizes)")
    return value


def read_image(path: Path, limits: Limits | None = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB, upright (EXIF orientation applied); 16-bit and 32-bit greyscale
    scaled to 8 bits (PIL's ``convert("RGB")`` would clip them to white). An image whose header
    declares more than ``limits.max_pixels`` (default: ``Limits.from_env()``) is refused before
    it is decoded."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    limits = limits or Limits.from_env()
    try:
        with Image.open(path) as im:  # reads the header only
            limits.check_size(path, *im.size)
            return _rgb8(ImageOps.exif_transpose(im))
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as err:
        if isinstance(err, MediaError):
            raise
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
    container, stream, fps = _open_video(target, source, "cannot open the live source", format="v4l2" if source.startswith("/dev/video") else None)

    def frames() -> Iterator[np.ndarray]:
        try:
            for frame in container.decode(stream):
                yield upright(frame.to_ndarray(format="rgb24"), getattr(frame, "rotation", 0))
        except (av.error.FFmpegError, OSError, ValueError) as err:
            raise MediaError(f"{source}: the live source broke off ({err.__class__.__name__}: {err})") from None
        finally:
            container.close()

    return fps, frames()


def iter_video(path: Path, limits: Limits | None = None) -> tuple[float, Iterator[np.ndarray]]:
    """Frames per second and a generator of (H, W, 3) uint8 RGB frames, decoded one at a time
    (for long inputs). Opening and every decoding failure raise ``MediaError`` naming the file;
    a video that breaks off says after how many frames. Before any frame is decoded, the
    stream's declared size (and, when ``limits.max_frames`` is set, its declared frame count) is
    checked against ``limits`` (default: ``Limits.from_env()``); the decoder itself refuses a
    frame over the pixel limit (a size change mid-stream), and counting stops at the frame limit."""
    import av

    limits = limits or Limits.from_env()
    container, stream, fps = _open_video(str(path), path, "unreadable video")
    try:
        declared = _check_declared(container, stream, fps, path, limits)
    except MediaError:
        container.close()
        raise
    stream.codec_context.options = decoder_options(limits.max_pixels)

    def frames() -> Iterator[np.ndarray]:
        count, shape = 0, None
        try:
            for frame in container.decode(stream):
                limits.check_size(path, frame.width, frame.height)
                limits.check_frames(path, count + 1, "has more than")
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
            raise MediaError(f"{path}: video breaks off after {count} frames (its header declares about {declared}); the file is probably truncated")

    return fps, frames()


def _check_declared(container: Any, stream: Any, fps: float, path: Path, limits: Limits) -> int | None:
    """The frame count the header declares (None when unknown), after checking it and the
    declared width x height against ``limits``; nothing is decoded."""
    ctx = stream.codec_context
    limits.check_size(path, int(ctx.width or 0), int(ctx.height or 0))
    stream_seconds = float(stream.duration * stream.time_base) if stream.duration and stream.time_base else None
    only_video = len(container.streams) == 1  # otherwise the container's duration may be the audio's
    declared = declared_frames(stream.frames, stream_seconds or (container.duration / 1e6 if only_video and container.duration else None), fps)
    limits.check_frames(path, declared)
    return declared


TRUNCATED = 0.9  # fewer decoded frames than this share of the declared count means a cut-off file


def declared_frames(stream_frames: int, seconds: float | None, fps: float) -> int | None:
    """Frames the container promises: the stream's frame count (MP4), else the video's duration x
    fps (WebM/Matroska store a duration, not a count); None when neither is known."""
    if stream_frames and stream_frames > 0:
        return int(stream_frames)
    if seconds and seconds > 0 and fps > 0:
        return int(seconds * fps)
    return None


def read_video(path: Path, limits: Limits | None = None) -> tuple[np.ndarray, float]:
    """(T, H, W, 3) uint8 RGB frames and frames per second. A file that cannot be decoded to
    the end is an error (the sample is reported and skipped, never stored half). Holds every
    frame: ``s4d shards`` streams ``open_frames`` instead."""
    fps, frames = iter_video(path, limits)
    return np.stack(list(frames)), fps


def iter_frame_folder(path: Path, fps: float = 25.0, limits: Limits | None = None) -> tuple[float, Iterator[np.ndarray]]:
    """``fps`` and a generator of the folder's image frames, sorted by file name, read one at a
    time; all must decode and share one size. The file count is checked against
    ``limits.max_frames`` (if set) and each image's declared size against ``limits.max_pixels``
    before it is decoded."""
    limits = limits or Limits.from_env()
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTS)
    if not files:
        raise MediaError(f"{path}: no image frames in folder")
    limits.check_frames(path, len(files), "holds")

    def frames() -> Iterator[np.ndarray]:
        first = None
        for p in files:
            frame = read_image(p, limits)
            if first is not None and frame.shape != first:
                raise MediaError(f"{path}: frames differ in size ({first[:2]} then {frame.shape[:2]} at {p.name})")
            first = frame.shape
            yield frame

    return fps, frames()


def read_frame_folder(path: Path, fps: float = 25.0, limits: Limits | None = None) -> tuple[np.ndarray, float]:
    """(T, H, W, 3) frames sorted by file name; all must decode and share one size."""
    fps, frames = iter_frame_folder(path, fps, limits)
    return np.stack(list(frames)), fps


def open_frames(source: Path, kind: str, folder_fps: float, limits: Limits) -> tuple[float, Iterator[np.ndarray]]:
    """A fresh pass over a video file (``kind`` "video") or a frame folder: frames per second
    and a generator of (H, W, 3) uint8 RGB frames decoded one at a time, under ``limits``."""
    return iter_video(source, limits) if kind == "video" else iter_frame_folder(source, folder_fps, limits)
