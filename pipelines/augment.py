"""Training augmentation of decoded uint8 batches, on the loader's device, for both backends.

DALI and the PyTorch fallback only decode (and resize/crop images); this module applies the
reference's random recipe to what they decoded, so both backends augment identically, the
strength is timm's (``randaug.py``), and on a GPU the work runs on the GPU next to the model.

Clips (B, T, H, W, 3) uint8 -> (B, 3, T, S, S) float (or (B, V, 3, T, S, S) with V views, each
augmented independently): RandAugment (same ops on every frame) -> random-resized crop
(bilinear, like the reference's ``F.interpolate``) -> flip -> normalise -> erasing (one box for
all frames; "pixel" mode fills it with N(0, 1) noise after normalisation).
Images (B, S, S, 3) uint8 -> (B, 3, S, S) float: flip -> RandAugment -> erasing ("zero" mode:
black before normalisation) -> normalise.

A batch's random numbers are drawn first, all at once (``augment_params``), from a CPU
generator seeded by (seed, epoch, rank): a resumed epoch repeats exactly. Then one of two
implementations applies them. On a CPU, sample by sample with OpenCV kernels (fastest there).
On a GPU, batched: each RandAugment round is a fixed number of calls over the whole batch, crop
+ resize + flip is one ``grid_sample``, normalising and erasing are one call each; the batch's
arguments go up in one non-blocking copy and nothing waits on the device. The two agree to a
level or two of rounding (``tests/test_augment.py``), except inside "pixel" erasing boxes,
whose N(0, 1) noise each path draws its own way from the batch's noise seed; the batched path
equals itself run sample by sample exactly.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from preprocess.transfer import to_device

from . import augment_ops
from .augment_params import (
    AugParams,
    draw_randaugment,
    erase_box,  # noqa: F401  (re-exported)
    erase_boxes,
    rrc_box,  # noqa: F401  (re-exported)
    rrc_boxes,
)
from .config import Augment, LoaderConfig
from .randaug import Plan, apply_batched, apply_sample, plan
from .randaug_spec import RandAugmentSpec

# Bumped whenever the same seed would give different augmentation: recorded in a run's resume
# fingerprint, so a resumed run never continues with another augmentation unnoticed.
AUGMENT_VERSION = 2


def _resize(x: torch.Tensor, size: int, mode: str) -> torch.Tensor:
    """(N, 3, h, w) uint8 -> (N, 3, size, size), no antialiasing (the reference's
    ``F.interpolate``), in uint8 channels-last (torch's fast CPU path, ~8x faster than float,
    rounding to whole levels)."""
    x = x.contiguous(memory_format=torch.channels_last)
    return F.interpolate(x, size=(size, size), mode=mode, align_corners=False, antialias=False)


def device_generator(device: torch.device, seed: int) -> torch.Generator | None:
    """A generator on ``device`` seeded with ``seed`` (on a GPU, seeding is host-side: no wait).
    The one place device generators are made: the fake-CUDA tests replace it (a CUDA generator
    needs a driver)."""
    return torch.Generator(device=device).manual_seed(seed)


class BatchAugment:
    """``__call__(uint8 batch, gen) -> normalised float batch``; see the module docstring."""

    def __init__(self, cfg: LoaderConfig, video: bool) -> None:
        self.cfg, self.video = cfg, video
        self.aug: Augment = cfg.augment
        self.spec = RandAugmentSpec.parse(self.aug.randaugment) if self.aug.randaugment else None
        self._norm: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    # ------------------------------------------------------------------ the draws
    def draw(self, n: int, H: int, W: int, gen: torch.Generator) -> tuple[AugParams, Plan | None]:
        """Every random number of ``n`` samples of H x W frames, fixed-size per batch."""
        aug, S = self.aug, self.cfg.size
        ra = draw_randaugment(self.spec, n, gen) if self.spec is not None else None
        crop = rrc_boxes(n, H, W, aug.rrc_scale, aug.rrc_ratio, gen) if self.video and aug.rrc else None
        flip = torch.rand(n, generator=gen, dtype=torch.float64) < aug.flip
        erase = erase_boxes(n, S, S, aug.erase, gen)
        noise_seed = int(torch.randint(2**62, (), generator=gen))
        p = plan(ra.ops_BR, ra.levels_BR, ra.signs_BR, H, W) if ra is not None else None
        return AugParams(ra, crop, flip, erase, noise_seed), p

    def _normalisers(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(3,) scale and bias of ``(x / 255 - mean) / std``, made once per device."""
        if device not in self._norm:
            std = torch.tensor(self.cfg.std, dtype=torch.float64)
            scale, bias = 1.0 / (255.0 * std), -torch.tensor(self.cfg.mean, dtype=torch.float64) / std
            self._norm[device] = (scale.float().to(device), bias.float().to(device))
        return self._norm[device]

    def _normalised(self, x: torch.Tensor, channel_dim: int, out: torch.Tensor | None = None) -> torch.Tensor:
        """``(x / 255 - mean) / std`` into ``out`` (``x`` itself: in place), else into fresh
        contiguous memory (the batched path's permuted frames would otherwise cost the model's
        first layer a copy)."""
        shape = [1] * x.dim()
        shape[channel_dim] = 3
        scale, bias = self._normalisers(x.device)
        out = torch.empty(x.shape, dtype=torch.float32, device=x.device) if out is None else out
        return torch.mul(x, scale.view(shape), out=out).add_(bias.view(shape))

    def __call__(self, batch: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """(B, T, H, W, 3) clips or (B, S, S, 3) images, uint8 -> normalised float."""
        V = self.cfg.views if self.video else 1
        n = batch.shape[0] * V
        params, p = self.draw(n, *batch.shape[-3:-1], gen)
        run = self._per_sample if augment_ops.host_path(batch) else self._batched
        out = run(batch, params, p, V)
        return out if V == 1 else out.view(batch.shape[0], V, *out.shape[1:])

    # ------------------------------------------------------------------ CPU: sample by sample
    def _per_sample(self, batch: torch.Tensor, params: AugParams, p: Plan | None, V: int) -> torch.Tensor:
        """Samples one after another in the calling thread (worker threads would each start
        their own OpenMP team, whose spinning slowed the training step beside them 2x)."""
        S, n = self.cfg.size, batch.shape[0] * V
        out = torch.empty((n, 3, batch.shape[1], S, S) if self.video else (n, 3, S, S), device=batch.device)
        noise = device_generator(batch.device, params.noise_seed)
        flips, erases = params.flip_B.tolist(), params.erase_B4.tolist()
        for i in range(n):
            if self.video:  # every view of a clip starts from the same decoded frames
                x = batch[i // V].permute(0, 3, 1, 2)  # (T, 3, H, W) uint8, channels-last in memory
                x = apply_sample(x, p, i) if p is not None else x
                if params.crop_B4 is not None:
                    top, left, h, w = params.crop_B4[i].tolist()
                    x = x[..., top : top + h, left : left + w]
                if x.shape[-2:] != (S, S):
                    x = _resize(x, S, self.aug.rrc_interpolation)
                out[i].copy_((x.flip(-1) if flips[i] else x).permute(1, 0, 2, 3))  # uint8 -> float in the copy
                self._erase_(self._normalised(out[i], 0, out=out[i]), erases[i], noise)
            else:
                x = batch[i].permute(2, 0, 1)
                x = x.flip(-1) if flips[i] else x
                x = apply_sample(x, p, i) if p is not None else x
                out[i].copy_(x)
                if self.aug.erase_mode == "zero":
                    self._normalised(self._erase_(out[i], erases[i], noise), 0, out=out[i])
                else:
                    self._erase_(self._normalised(out[i], 0, out=out[i]), erases[i], noise)
        return out

    def _erase_(self, x: torch.Tensor, box: list[int], noise: torch.Generator | None) -> torch.Tensor:
        """One box over the last two dims, all leading dims (channels, frames) included."""
        top, left, h, w = box
        if h:
            region = x[..., top : top + h, left : left + w]
            if self.aug.erase_mode == "pixel":
                region.copy_(torch.randn(region.shape, generator=noise, device=x.device, dtype=x.dtype))
            else:
                region.zero_()
        return x

    # ------------------------------------------------------------------ GPU: batched
    def _batched(self, batch: torch.Tensor, params: AugParams, p: Plan | None, V: int) -> torch.Tensor:
        S, dev = self.cfg.size, batch.device
        n = batch.shape[0] * V
        H, W = batch.shape[-3:-1]
        whole = torch.tensor([0, 0, H, W], dtype=torch.int64).expand(n, 4)  # no random crop: the whole frame
        crop = params.crop_B4 if params.crop_B4 is not None else whole
        per_sample = torch.cat([crop, params.flip_B[:, None], params.erase_B4], dim=1).double()  # (n, 9)
        packed = torch.cat([per_sample.flatten()] + ([p.packed().flatten().double()] if p is not None else []))
        on_dev = to_device(packed.float(), dev)  # the batch's only host-to-device copy
        box_n9 = on_dev[: n * 9].view(n, 9)
        x = batch if V == 1 else batch.repeat_interleave(V, dim=0)
        x = x.permute(0, 1, 4, 2, 3) if self.video else x.permute(0, 3, 1, 2)[:, None]  # (n, T, 3, H, W)
        any_flip = bool(params.flip_B.any())
        if not self.video and any_flip:
            x = torch.where(box_n9[:, 4].view(n, 1, 1, 1, 1) > 0, x.flip(-1), x)
        if p is not None:
            x = apply_batched(x, p, on_dev[n * 9 :].view(*p.kind_RB.shape, -1))
        if self.video:
            resample = params.crop_B4 is not None or (H, W) != (S, S) or any_flip
            out = (self._geometry(x, box_n9[:, :4], box_n9[:, 4]) if resample else x.float()).permute(0, 2, 1, 3, 4)  # (n, 3, T, S, S)
            return self._erase_batched(self._normalised(out, 1), box_n9[:, 5:], params)
        out = x[:, 0].float()  # (n, 3, S, S)
        if self.aug.erase_mode == "zero":
            return self._normalised(self._erase_batched(out, box_n9[:, 5:], params), 1)
        return self._erase_batched(self._normalised(out, 1), box_n9[:, 5:], params)

    def _geometry(self, x: torch.Tensor, crop_n4: torch.Tensor, flip_n: torch.Tensor) -> torch.Tensor:
        """Random-resized crop, resize to S and flip as one ``grid_sample``: (n, T, 3, H, W)
        uint8 -> (n, T, 3, S, S) float. Output pixel j samples the crop at left + (j + 0.5) w / S
        (the reference's ``F.interpolate``, align_corners False); edge pixels clamp to the
        frame, where ``F.interpolate`` clamps to the crop."""
        n, T, _, H, W = x.shape
        S = self.cfg.size
        j = (torch.arange(S, dtype=torch.float32, device=x.device) + 0.5) / S  # (S,) centres in 0..1
        jx = torch.where(flip_n[:, None] > 0, 1.0 - j, j)  # (n, S)
        top, left, h, w = crop_n4.unbind(1)
        gx = (left[:, None] + jx * w[:, None]) * (2 / W) - 1  # (n, S)
        gy = (top[:, None] + j * h[:, None]) * (2 / H) - 1
        grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), dim=-1)  # (n, S, S, 2)
        frames = x.reshape(n * T, 3, H, W).float()
        y = F.grid_sample(frames, grid.repeat_interleave(T, dim=0), mode=self.aug.rrc_interpolation, padding_mode="border", align_corners=False)
        if self.aug.rrc_interpolation == "bicubic":
            y = y.clamp_(0, 255)
        return y.view(n, T, 3, S, S)

    def _erase_batched(self, x: torch.Tensor, box_n4: torch.Tensor, params: AugParams) -> torch.Tensor:
        """Every sample's box at once (one box over channels and frames): N(0, 1) noise ("pixel")
        or zero; nothing when no sample erases (known on the host)."""
        if not params.erase_B4[:, 2].any():
            return x
        S = x.shape[-1]
        i = torch.arange(S, device=x.device, dtype=torch.float32)
        top, left, h, w = (v.view(-1, 1, 1) for v in box_n4.unbind(1))
        inside = (i.view(1, S, 1) >= top) & (i.view(1, S, 1) < top + h) & (i.view(1, 1, S) >= left) & (i.view(1, 1, S) < left + w)
        mask = inside.view(len(x), *[1] * (x.dim() - 3), S, S)
        if self.aug.erase_mode == "pixel":
            noise = torch.randn(x.shape, generator=device_generator(x.device, params.noise_seed), device=x.device, dtype=x.dtype)
            return torch.where(mask, noise, x)
        return x.masked_fill_(mask, 0.0)


def epoch_generator(seed: int, epoch: int, rank: int) -> torch.Generator:
    """The epoch's generator (CPU): every draw of ``BatchAugment`` comes from it."""
    return torch.Generator().manual_seed(int(np.random.default_rng([seed, epoch, 5000 + rank]).integers(2**62)))
