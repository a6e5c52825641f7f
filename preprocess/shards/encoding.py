"""A sample's components: aligned faces encoded in memory, and the fixed-width label record.

Per-sample components (DESIGN §3):
- ``KEY.webm`` (VP9) / ``KEY.avi`` (MJPEG) for clips, ``KEY.jpg`` for images (``component_ext``);
- ``KEY.info``: little-endian int32 ``[label, frames, fps * 1000, faces_found]``, fixed width so
  DALI reads it with ``dtypes=INT32`` and no Python callback;
- ``KEY.json``: metadata for humans and the PyTorch fallback (original id, source, fps, ...).

Both clip codecs are decoded by DALI on CPU and GPU (DESIGN §3). Encoding is single-threaded
and uses fixed settings, so the same frames give the same bytes (resumed runs write
byte-identical shards).
"""

from __future__ import annotations

import io
from fractions import Fraction

import cv2
import numpy as np

CLIP_EXT = {"vp9": "webm", "mjpeg": "avi"}
INFO_FIELDS = ("label", "frames", "fps_milli", "faces_found")


def component_ext(codec: str) -> str:
    """The media component's extension for a manifest's ``preprocess.codec`` (``jpeg`` for images)."""
    return {**CLIP_EXT, "jpeg": "jpg"}[codec]


def pack_info(label: int, frames: int, fps: float, faces_found: int) -> bytes:
    return np.asarray([label, frames, round(fps * 1000), faces_found], dtype="<i4").tobytes()


def unpack_info(raw: bytes) -> dict[str, int]:
    return dict(zip(INFO_FIELDS, (int(v) for v in np.frombuffer(raw, dtype="<i4"))))


def encode_clip(frames: np.ndarray, fps: float, codec: str, quality: int) -> bytes:
    """(T, H, W, 3) uint8 RGB -> container bytes. ``quality`` is the VP9 CRF (lower = better,
    ~30 is visually clean at 160 px) or the MJPEG quantiser (2..31, lower = better)."""
    import av

    if codec not in CLIP_EXT:
        raise ValueError(f"clip codec must be one of {sorted(CLIP_EXT)}, got {codec!r}")
    T, H, W, _ = frames.shape
    rate = Fraction(fps).limit_denominator(1001)
    buf = io.BytesIO()
    # bitexact: no random segment id or muxing date, so equal frames give equal bytes
    with av.open(buf, "w", format=CLIP_EXT[codec], options={"fflags": "+bitexact"}) as out:
        if codec == "vp9":
            options = {"crf": str(quality), "b": "0", "g": "32", "deadline": "good", "cpu-used": "4", "threads": "1", "row-mt": "0"}
            stream = out.add_stream("libvpx-vp9", rate=rate, options=options)
            stream.pix_fmt = "yuv420p"
        else:
            stream = out.add_stream("mjpeg", rate=rate)
            stream.pix_fmt = "yuvj420p"
            stream.codec_context.qmin = stream.codec_context.qmax = quality
        stream.width, stream.height = W, H
        stream.thread_count = 1
        for rgb in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")))
        out.mux(stream.encode(None))
    return buf.getvalue()


def encode_image(image: np.ndarray, quality: int = 95) -> bytes:
    """(H, W, 3) uint8 RGB -> JPEG bytes."""
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return data.tobytes()
