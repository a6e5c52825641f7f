"""Can DALI decode on this GPU? Asked once per process and GPU, before the first GPU pipeline.

A DALI wheel built for a newer CUDA than the driver imports fine and fails only when a GPU
graph is built; a container without ``libnvcuvid`` decodes JPEG on the GPU but no video. Both
are found here by decoding one tiny image and one tiny clip on the GPU (``mixed``), so the
loader can decode on the CPU instead, with one line saying why, and never blame a shard.
NVDEC also refuses frames under ``MIN_NVDEC_SIDE`` pixels a side: such clips decode on the CPU.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass

import numpy as np

MIN_NVDEC_SIDE = 128  # smallest frame side NVDEC decodes (VP9 on current GPUs)


@dataclass(frozen=True)
class GpuDecode:
    """None where DALI decodes on the GPU; otherwise the reason, one line."""

    images: str | None
    clips: str | None


def _reason(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:200] if text else ''}"


def _run_once(device_id: int, data: np.ndarray, video: bool) -> None:
    import nvidia.dali.fn as fn
    import nvidia.dali.types as types
    from nvidia.dali import pipeline_def

    @pipeline_def(batch_size=1, num_threads=1, device_id=device_id, exec_dynamic=True)
    def pipe():
        raw = fn.external_source(source=lambda: [data], batch=True, dtype=types.UINT8)
        if video:
            return fn.decoders.video(raw, device="mixed", sequence_length=4)
        return fn.decoders.image(raw, device="mixed", output_type=types.RGB)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        p = pipe()
        p.build()
        p.run()


@functools.cache
def gpu_decode(device_id: int, codec: str = "vp9") -> GpuDecode:
    """Decodes one JPEG and one clip in the shards' codec (``vp9`` or ``mjpeg``) on the GPU."""
    from preprocess.shards.encoding import encode_clip, encode_image

    frames = np.random.default_rng(0).integers(0, 256, (8, MIN_NVDEC_SIDE, MIN_NVDEC_SIDE, 3), dtype=np.uint8)
    reasons: list[str | None] = []
    for video, encode in ((False, lambda: encode_image(frames[0])), (True, lambda: encode_clip(frames, 25.0, codec, 30 if codec == "vp9" else 5))):
        try:
            _run_once(device_id, np.frombuffer(encode(), np.uint8), video)
            reasons.append(None)
        except Exception as err:  # any failure (the encoder's too) means: decode on the CPU
            reasons.append(_reason(err))
    return GpuDecode(*reasons)


def decode_place(device_id: int | None, video: bool, stored_side: int, probe: GpuDecode | None) -> tuple[str, str | None]:
    """Where DALI decodes ("mixed" or "cpu") and, when a GPU run decodes on the CPU, why."""
    if device_id is None:
        return "cpu", None
    reason = (probe.clips if video else probe.images) if probe is not None else None
    if reason is not None:
        return "cpu", f"DALI cannot decode {'clips' if video else 'images'} on GPU {device_id} ({reason})"
    if video and stored_side < MIN_NVDEC_SIDE:
        return "cpu", f"clips of {stored_side} px are under NVDEC's {MIN_NVDEC_SIDE} px minimum"
    return "mixed", None
