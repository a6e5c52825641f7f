"""DALI graphs: decode (``mixed`` on a GPU, CPU otherwise) -> augment -> normalise.

Samples come from the Python batch plan through ``fn.external_source`` (bytes sliced out of
the shards by their index), so sampling, rank splitting and class balancing are the same
pure functions the PyTorch fallback uses. Clips: ``fn.decoders.video`` decodes only the
requested frames (``start_frame``/``stride``/``sequence_length``, ``pad_mode="edge"``).
"""

from __future__ import annotations

import math
import warnings
from typing import Callable

from .config import LoaderConfig

with warnings.catch_warnings():  # DALI's auto_aug imports deprecated aliases of its own ops
    warnings.simplefilter("ignore", DeprecationWarning)
    import nvidia.dali.fn as fn
    import nvidia.dali.math as dmath
    import nvidia.dali.types as types
    from nvidia.dali import pipeline_def
    from nvidia.dali.auto_aug import rand_augment


def _erase(x, cfg: LoaderConfig):
    """Random erasing after normalisation (fill 0 = the mean colour); one box for all frames.
    Area 2%..33% of the image, aspect log-uniform in 0.3..3.3, with probability ``erase``."""
    side = float(cfg.size)
    area = fn.random.uniform(range=[0.02, 1 / 3]) * side * side
    ratio = dmath.exp(fn.random.uniform(range=[math.log(0.3), math.log(1 / 0.3)]))
    h = dmath.clamp(dmath.sqrt(area * ratio), 1.0, side)
    w = dmath.clamp(dmath.sqrt(area / ratio), 1.0, side)
    anchor = fn.stack(fn.random.uniform(range=[0.0, 1.0]) * (side - h), fn.random.uniform(range=[0.0, 1.0]) * (side - w))
    if fn.random.coin_flip(probability=cfg.augment.erase):
        x = fn.erase(x, anchor=anchor, shape=fn.stack(h, w), axis_names="HW", fill_value=0.0)
    return x


def _normalise(x, cfg: LoaderConfig, layout: str, flip: bool):
    mirror = fn.random.coin_flip(probability=cfg.augment.flip) if flip and cfg.augment.flip > 0 else 0
    return fn.crop_mirror_normalize(
        x, dtype=types.FLOAT, output_layout=layout, mean=[255 * m for m in cfg.mean], std=[255 * s for s in cfg.std], mirror=mirror
    )


def build_video_pipe(cfg: LoaderConfig, source: Callable, stored_size: int, device_id: int | None, seed: int):
    """Outputs: train -> (clips (B,3,T,H,W) float, or (B,V,3,T,H,W) with ``views`` > 1, labels);
    eval -> (first clips, last clips, labels)."""
    aug = cfg.augment
    decode_on = "mixed" if device_id is not None else "cpu"

    @pipeline_def(enable_conditionals=True, batch_size=cfg.batch_size, num_threads=cfg.num_threads, device_id=device_id,
                  seed=seed, prefetch_queue_depth=2)
    def pipe():
        if cfg.train:  # (bytes, start, label); eval adds the second clip's start
            data, s0, labels = fn.external_source(source=source, num_outputs=3, batch=True, dtype=[types.UINT8, types.INT32, types.INT64])
        else:
            data, s0, s1, labels = fn.external_source(source=source, num_outputs=4, batch=True,
                                                      dtype=[types.UINT8, types.INT32, types.INT32, types.INT64])

        def clip(start):
            v = fn.decoders.video(data, device=decode_on, start_frame=start, sequence_length=cfg.frames, stride=cfg.stride, pad_mode="edge")
            if cfg.crop is not None:
                top, left, h, w = cfg.crop
                v = fn.crop(v, crop_h=h, crop_w=w, crop_pos_x=left / max(stored_size - w, 1), crop_pos_y=top / max(stored_size - h, 1))
            return v

        if cfg.train:
            decoded = clip(s0)
            views = []
            for _ in range(cfg.views):  # each view draws its own random parameters
                v = decoded
                if aug.rrc_scale != (1.0, 1.0):
                    v = fn.random_resized_crop(v, size=[cfg.size, cfg.size], random_area=list(aug.rrc_scale),
                                               random_aspect_ratio=list(aug.rrc_ratio))
                else:
                    v = fn.resize(v, size=[cfg.size, cfg.size])
                if aug.rand_n > 0:
                    v = rand_augment.rand_augment(v, n=aug.rand_n, m=aug.rand_m)
                v = _normalise(v, cfg, "CFHW", flip=True)
                if aug.erase > 0:
                    v = _erase(v, cfg)
                views.append(v)
            return (views[0] if cfg.views == 1 else fn.stack(*views)), labels
        first, last = (_normalise(fn.resize(clip(s), size=[cfg.size, cfg.size]), cfg, "CFHW", flip=False) for s in (s0, s1))
        return first, last, labels

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return pipe()


def build_image_pipe(cfg: LoaderConfig, source: Callable, device_id: int | None, seed: int):
    """Outputs: (images (B,3,H,W) float, labels). Train: resize shorter side to
    ``image_resize``, random ``size`` crop, flip, RandAugment, erasing; eval: centre crop."""
    aug = cfg.augment
    decode_on = "mixed" if device_id is not None else "cpu"

    @pipeline_def(enable_conditionals=True, batch_size=cfg.batch_size, num_threads=cfg.num_threads, device_id=device_id,
                  seed=seed, prefetch_queue_depth=2)
    def pipe():
        data, labels = fn.external_source(source=source, num_outputs=2, batch=True, dtype=[types.UINT8, types.INT64])
        img = fn.decoders.image(data, device=decode_on, output_type=types.RGB)
        img = fn.resize(img, resize_shorter=cfg.image_resize)
        if cfg.train:
            img = fn.crop(img, crop=[cfg.size, cfg.size], crop_pos_x=fn.random.uniform(range=[0.0, 1.0]),
                          crop_pos_y=fn.random.uniform(range=[0.0, 1.0]))
            if aug.rand_n > 0:
                img = rand_augment.rand_augment(img, n=aug.rand_n, m=aug.rand_m)
            img = _normalise(img, cfg, "CHW", flip=True)
            if aug.erase > 0:
                img = _erase(img, cfg)
            return img, labels
        return _normalise(fn.crop(img, crop=[cfg.size, cfg.size]), cfg, "CHW", flip=False), labels

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return pipe()
