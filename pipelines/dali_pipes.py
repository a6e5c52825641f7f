"""DALI graphs: decode (``mixed`` on a GPU, CPU otherwise; ``probe.decode_place`` decides) -> resize
(-> normalise for evaluation).

Training graphs only decode (clips: squashed to the output size; images: resized and
cropped) and hand uint8 to ``augment.BatchAugment``, which applies the random recipe on the
loader's device for both backends; evaluation graphs also normalise. Samples come from the
Python batch plan through ``fn.external_source`` (bytes sliced out of
the shards by their index), so sampling, rank splitting and class balancing are the same
pure functions the PyTorch fallback uses. Clips: ``fn.decoders.video`` decodes only the
requested frames (``start_frame``/``stride``/``sequence_length``, ``pad_mode="edge"``).
The graphs draw nothing at random (the training image crop comes from the loader's seeded
generator through the external source), so one build serves every epoch and a resumed run
repeats its epoch exactly. The default dynamic executor hands outputs over to their holder, so
batches taken by DLPack stay valid after the next ``run()``.
"""

from __future__ import annotations

import warnings
from typing import Callable

import nvidia.dali.fn as fn
import nvidia.dali.types as types
from nvidia.dali import pipeline_def

from .config import LoaderConfig


def _normalise(x, cfg: LoaderConfig, layout: str):
    return fn.crop_mirror_normalize(x, dtype=types.FLOAT, output_layout=layout, mean=[255 * m for m in cfg.mean], std=[255 * s for s in cfg.std])


def build_video_pipe(cfg: LoaderConfig, source: Callable, stored_size: int, device_id: int | None, decode_on: str, threads: int):
    """Outputs: train -> (decoded clips (B,T,S,S,3) uint8 at the output size, labels), which
    ``augment.BatchAugment`` augments; eval -> (first clips, last clips (B,3,T,S,S) float, labels)."""

    @pipeline_def(batch_size=cfg.batch_size, num_threads=threads, device_id=device_id, seed=cfg.seed, prefetch_queue_depth=2, exec_dynamic=True)
    def pipe():
        if cfg.train:  # (bytes, start, label); eval adds the second clip's start
            data, s0, labels = fn.external_source(source=source, num_outputs=3, batch=True, dtype=[types.UINT8, types.INT32, types.INT64])
        else:
            data, s0, s1, labels = fn.external_source(
                source=source, num_outputs=4, batch=True, dtype=[types.UINT8, types.INT32, types.INT32, types.INT64]
            )

        def clip(start):
            v = fn.decoders.video(data, device=decode_on, start_frame=start, sequence_length=cfg.frames, stride=cfg.stride, pad_mode="edge")
            if cfg.crop is not None:
                top, left, h, w = cfg.crop
                v = fn.crop(v, crop_h=h, crop_w=w, crop_pos_x=left / max(stored_size - w, 1), crop_pos_y=top / max(stored_size - h, 1))
            return v

        if cfg.train:  # the whole frame squashed to the output size (the reference's geometry)
            return fn.resize(clip(s0), size=[cfg.size, cfg.size]), labels
        first, last = (_normalise(fn.resize(clip(s), size=[cfg.size, cfg.size]), cfg, "CFHW") for s in (s0, s1))
        return first, last, labels

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return pipe()


def build_image_pipe(cfg: LoaderConfig, source: Callable, device_id: int | None, decode_on: str, threads: int):
    """Outputs: train -> (images (B,S,S,3) uint8, labels): the crop the source gives per sample,
    a relative box (top, left) .. (bottom, right) resized to ``size`` when the augmentation asks
    for a random-resized crop (MAE), else the shorter side resized to ``image_resize`` and a
    ``size`` crop at the relative position (y, x); ``augment.BatchAugment`` does the rest.
    Eval -> (images (B,3,S,S) float, labels): the whole image resized to ``size`` x ``size``,
    as the reference tests."""
    aug = cfg.augment

    @pipeline_def(batch_size=cfg.batch_size, num_threads=threads, device_id=device_id, seed=cfg.seed, prefetch_queue_depth=2, exec_dynamic=True)
    def pipe():
        if not cfg.train:
            data, labels = fn.external_source(source=source, num_outputs=2, batch=True, dtype=[types.UINT8, types.INT64])
            img = fn.decoders.image(data, device=decode_on, output_type=types.RGB)
            return _normalise(fn.resize(img, size=[cfg.size, cfg.size]), cfg, "CHW"), labels
        n = 4 if aug.rrc else 3
        data, labels, a, *b = fn.external_source(
            source=source, num_outputs=n, batch=True, dtype=[types.UINT8, types.INT64, types.FLOAT, types.FLOAT][:n]
        )
        img = fn.decoders.image(data, device=decode_on, output_type=types.RGB)
        if aug.rrc:  # a: (top, left), b: (bottom, right), relative; in shape order
            interp = types.INTERP_CUBIC if aug.rrc_interpolation == "bicubic" else types.INTERP_LINEAR
            return fn.resize(img, size=[cfg.size, cfg.size], roi_start=a, roi_end=b[0], roi_relative=True, interp_type=interp), labels
        img = fn.resize(img, resize_shorter=cfg.image_resize)  # a: (y, x) crop position in [0, 1]
        return fn.crop(img, crop=[cfg.size, cfg.size], crop_pos_x=a[1], crop_pos_y=a[0]), labels

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return pipe()
