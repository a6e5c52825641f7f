"""Training augmentation of decoded uint8 batches, on the loader's device, for both backends.

DALI and the PyTorch fallback only decode (and resize/crop images); this module applies the
reference's random recipe to what they decoded, so both backends augment identically, the
strength is timm's (``randaug.py``), and on a GPU the work runs on the GPU next to the model.
Every random number comes from a ``torch.Generator`` seeded by (seed, epoch, rank): a resumed
epoch repeats exactly.

Clips (B, T, H, W, 3) uint8 -> (B, 3, T, S, S) float (or (B, V, 3, T, S, S) with V views, each
augmented independently): RandAugment (same ops on every frame) -> random-resized crop
(bilinear, like the reference's ``F.interpolate``) -> flip -> normalise -> erasing (one box for
all frames; "pixel" mode fills it with N(0, 1) noise after normalisation).
Images (B, S, S, 3) uint8 -> (B, 3, S, S) float: flip -> RandAugment -> erasing ("zero" mode:
black before normalisation) -> normalise.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .config import Augment, LoaderConfig
from .randaug import RandAugment, RandAugmentSpec


def _randint(lo: int, hi: int, gen: torch.Generator) -> int:
    """Uniform integer in [lo, hi]."""
    return int(torch.randint(lo, hi + 1, (), generator=gen))


def _uniform(lo: float, hi: float, gen: torch.Generator) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=gen))


def rrc_box(H: int, W: int, scale: tuple[float, float], ratio: tuple[float, float], gen: torch.Generator) -> tuple[int, int, int, int]:
    """(top, left, h, w) by torchvision's RandomResizedCrop rule: 10 tries at a random area and
    log-uniform aspect, else the largest centred box within the ratio range."""
    area = H * W
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target = area * _uniform(*scale, gen)
        aspect = math.exp(_uniform(log_lo, log_hi, gen))
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= W and 0 < h <= H:
            return _randint(0, H - h, gen), _randint(0, W - w, gen), h, w
    in_ratio = W / H
    if in_ratio < ratio[0]:
        w, h = W, round(W / ratio[0])
    elif in_ratio > ratio[1]:
        h, w = H, round(H * ratio[1])
    else:
        w, h = W, H
    return (H - h) // 2, (W - w) // 2, h, w


def erase_box(H: int, W: int, gen: torch.Generator) -> tuple[int, int, int, int] | None:
    """(top, left, h, w) by timm's RandomErasing rule (area 2%..1/3, log-uniform aspect
    0.3..3.3, 10 tries), or None when no box fits."""
    log_lo, log_hi = math.log(0.3), math.log(1 / 0.3)
    for _ in range(10):
        target = H * W * _uniform(0.02, 1 / 3, gen)
        aspect = math.exp(_uniform(log_lo, log_hi, gen))
        h, w = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if h < H and w < W:
            return _randint(0, H - h, gen), _randint(0, W - w, gen), h, w
    return None


def _resize(x: torch.Tensor, size: int, mode: str) -> torch.Tensor:
    """(N, 3, h, w) uint8 -> (N, 3, size, size), no antialiasing (the reference's
    ``F.interpolate``). On a CPU in uint8 channels-last (torch's fast path, ~8x faster than
    float, rounding to whole levels); elsewhere in float."""
    if x.device.type == "cpu":
        x = x.contiguous(memory_format=torch.channels_last)
        return F.interpolate(x, size=(size, size), mode=mode, align_corners=False, antialias=False)
    y = F.interpolate(x.float(), size=(size, size), mode=mode, align_corners=False)
    return y.clamp_(0, 255) if mode == "bicubic" else y


class BatchAugment:
    """``__call__(uint8 batch, gen) -> normalised float batch``; see the module docstring."""

    def __init__(self, cfg: LoaderConfig, video: bool) -> None:
        self.cfg, self.video = cfg, video
        aug: Augment = cfg.augment
        self.aug = aug
        self.randaug = RandAugment(RandAugmentSpec.parse(aug.randaugment)) if aug.randaugment else None
        self._norm: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def _normalise_(self, x: torch.Tensor, channel_dim: int) -> torch.Tensor:
        """In place: 0..255 float -> (x / 255 - mean) / std. The (3,) scale and bias are made
        once per device (one upload in a run, not two per sample)."""
        if x.device not in self._norm:
            std = torch.tensor(self.cfg.std, dtype=torch.float64)
            scale, bias = 1.0 / (255.0 * std), -torch.tensor(self.cfg.mean, dtype=torch.float64) / std
            self._norm[x.device] = (scale.float().to(x.device), bias.float().to(x.device))
        shape = [1] * x.dim()
        shape[channel_dim] = 3
        scale, bias = self._norm[x.device]
        return x.mul_(scale.view(shape)).add_(bias.view(shape))

    def _erase(self, x: torch.Tensor, gen: torch.Generator, noise_gen: torch.Generator) -> torch.Tensor:
        """One box over the last two dims, all leading dims (channels, frames) included."""
        if self.aug.erase <= 0 or float(torch.rand((), generator=gen)) >= self.aug.erase:
            return x
        box = erase_box(*x.shape[-2:], gen)
        if box is None:
            return x
        top, left, h, w = box
        region = x[..., top : top + h, left : left + w]
        if self.aug.erase_mode == "pixel":
            region.copy_(torch.randn(region.shape, generator=noise_gen, device=x.device, dtype=x.dtype))
        else:
            region.zero_()
        return x

    def _flip(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return x.flip(-1) if self.aug.flip > 0 and float(torch.rand((), generator=gen)) < self.aug.flip else x

    def _clip(self, clip_THWC: torch.Tensor, out_CTSS: torch.Tensor, gen: torch.Generator, noise_gen: torch.Generator) -> None:
        """(T, H, W, 3) uint8 -> ``out_CTSS`` (3, T, S, S) float, normalised."""
        S = self.cfg.size
        x = clip_THWC.permute(0, 3, 1, 2)  # (T, 3, H, W) uint8, channels-last in memory
        if self.randaug is not None:
            x = self.randaug(x, gen)
        H, W = x.shape[-2:]
        if self.aug.rrc:
            top, left, h, w = rrc_box(H, W, self.aug.rrc_scale, self.aug.rrc_ratio, gen)
            x = x[..., top : top + h, left : left + w]
        if x.shape[-2:] != (S, S):
            x = _resize(x, S, self.aug.rrc_interpolation)
        out_CTSS.copy_(self._flip(x, gen).permute(1, 0, 2, 3))  # uint8 -> float in the copy
        self._normalise_(out_CTSS, 0)
        self._erase(out_CTSS, gen, noise_gen)

    def _image(self, img_HWC: torch.Tensor, gen: torch.Generator, noise_gen: torch.Generator) -> torch.Tensor:
        x = self._flip(img_HWC.permute(2, 0, 1), gen)  # (3, S, S) uint8
        if self.randaug is not None:
            x = self.randaug(x, gen)
        x = x.float()
        if self.aug.erase_mode == "zero":
            return self._normalise_(self._erase(x, gen, noise_gen), 0)
        return self._erase(self._normalise_(x, 0), gen, noise_gen)

    def __call__(self, batch: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """(B, T, H, W, 3) clips or (B, S, S, 3) images, uint8 -> normalised float.

        Each sample (and view) gets its own generators, seeded in order from ``gen``. Samples
        run one after another in the calling thread: worker threads would each start their
        own OpenMP team, whose spinning threads slowed the training step beside them 2x."""
        B, V, S = batch.shape[0], self.cfg.views if self.video else 1, self.cfg.size
        seeds = torch.randint(2**62, (B * V + 1,), generator=gen).tolist()
        out = torch.empty((B, V, 3, batch.shape[1], S, S) if self.video else (B, 1, 3, S, S), device=batch.device)
        noise = device_generator(batch.device, seeds[-1])  # the erasing noise, drawn on the device

        def work(i: int) -> None:
            g = torch.Generator().manual_seed(seeds[i])
            b, v = divmod(i, V)
            if self.video:  # every view of a clip starts from the same decoded frames
                self._clip(batch[b], out[b, v], g, noise)
            else:
                out[b, 0].copy_(self._image(batch[b], g, noise))

        for i in range(B * V):
            work(i)
        return out[:, 0] if V == 1 else out


def device_generator(device: torch.device, seed: int) -> torch.Generator | None:
    """A generator on ``device`` seeded with ``seed`` (on a GPU, seeding is host-side: no wait).
    The one place device generators are made: the fake-CUDA tests replace it (a CUDA generator
    needs a driver)."""
    return torch.Generator(device=device).manual_seed(seed)


def epoch_generator(seed: int, epoch: int, rank: int) -> torch.Generator:
    """The epoch's generator (CPU): the per-sample seeds of ``BatchAugment`` come from it."""
    return torch.Generator().manual_seed(int(np.random.default_rng([seed, epoch, 5000 + rank]).integers(2**62)))
