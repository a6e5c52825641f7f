"""Every random number of the training augmentation, drawn for a whole batch at once.

This is the only module of the augmentation that draws. Draws have a fixed size per batch
(what each sample *could* need: every RandAugment round's op, on/off, magnitude noise and sign;
ten tries of a crop box and of an erasing box; the flip), so the generator's stream does not
depend on which ops ran, and a resumed epoch repeats exactly. Everything comes from one CPU
``torch.Generator`` seeded by (seed, epoch, rank): the host knows every sample's ops before
the device does any work, which is what lets the device path run without waiting.

The rules are torchvision's RandomResizedCrop and timm's RandomErasing and RandAugment, applied
to pre-drawn uniforms (``rrc_rule``, ``erase_rule``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .randaug_spec import LEVEL_DENOM, OPS, RandAugmentSpec

TRIES = 10  # torchvision's and timm's attempts at a box before their fallback


@dataclass(frozen=True)
class RandAugmentDraw:
    """Per sample b and round r: the op (index into ``OPS``, -1 when the round is skipped by
    its probability), its magnitude on 0..10 after noise and clipping, and its sign (+1/-1)."""

    ops_BR: torch.Tensor  # int64
    levels_BR: torch.Tensor  # float64
    signs_BR: torch.Tensor  # float64


@dataclass(frozen=True)
class AugParams:
    """One batch's draws. Boxes are (top, left, h, w) in pixels of the frame they apply to."""

    randaug: RandAugmentDraw | None
    crop_B4: torch.Tensor | None  # int64; None: no random-resized crop
    flip_B: torch.Tensor  # bool
    erase_B4: torch.Tensor  # int64; h == 0: no erasing for that sample
    noise_seed: int  # the device generator's seed for "pixel" erasing


def draw_randaugment(spec: RandAugmentSpec, n: int, gen: torch.Generator) -> RandAugmentDraw:
    """timm's draws for ``n`` samples: ops uniformly with replacement, each kept with
    probability ``p``, magnitude ``m + mstd * N(0, 1)`` clipped to 0..10, negated with
    probability 0.5 (signed ops only use it)."""
    R = spec.num_ops
    ops = torch.randint(len(OPS), (n, R), generator=gen)
    keep = torch.rand(n, R, generator=gen, dtype=torch.float64)
    noise = torch.randn(n, R, generator=gen, dtype=torch.float64)
    flip = torch.rand(n, R, generator=gen, dtype=torch.float64)
    if spec.prob < 1.0:
        ops = torch.where(keep > spec.prob, torch.full_like(ops, -1), ops)
    if math.isinf(spec.magnitude_std):  # timm's mstd > 100: uniform on 0..m (the normal draw through its CDF)
        levels = spec.magnitude * 0.5 * (1.0 + torch.erf(noise / math.sqrt(2.0)))
    elif spec.magnitude_std > 0:
        levels = (spec.magnitude + spec.magnitude_std * noise).clamp(0.0, LEVEL_DENOM)
    else:
        levels = torch.full((n, R), spec.magnitude, dtype=torch.float64)
    return RandAugmentDraw(ops, levels, torch.where(flip > 0.5, -1.0, 1.0).to(torch.float64))


def rrc_rule(
    H: int, W: int, scale: tuple[float, float], ratio: tuple[float, float], tries_T2: list[list[float]], pos_2: list[float]
) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop on pre-drawn uniforms: ``TRIES`` (area, log-aspect)
    pairs, then the position; else the largest centred box within the ratio range."""
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for ua, ur in tries_T2:
        target = H * W * (scale[0] + (scale[1] - scale[0]) * ua)
        aspect = math.exp(log_lo + (log_hi - log_lo) * ur)
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= W and 0 < h <= H:
            return _pick(H - h, pos_2[0]), _pick(W - w, pos_2[1]), h, w
    in_ratio = W / H
    if in_ratio < ratio[0]:
        w, h = W, round(W / ratio[0])
    elif in_ratio > ratio[1]:
        h, w = H, round(H * ratio[1])
    else:
        w, h = W, H
    return (H - h) // 2, (W - w) // 2, h, w


def erase_rule(H: int, W: int, tries_T2: list[list[float]], pos_2: list[float]) -> tuple[int, int, int, int] | None:
    """timm's RandomErasing box (area 2%..1/3, log-uniform aspect 0.3..3.3) on pre-drawn
    uniforms, or None when no try fits."""
    log_lo, log_hi = math.log(0.3), math.log(1 / 0.3)
    for ua, ur in tries_T2:
        target = H * W * (0.02 + (1 / 3 - 0.02) * ua)
        aspect = math.exp(log_lo + (log_hi - log_lo) * ur)
        h, w = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if h < H and w < W:
            return _pick(H - h, pos_2[0]), _pick(W - w, pos_2[1]), h, w
    return None


def _pick(hi: int, u: float) -> int:
    """Uniform integer in [0, hi] from a uniform in [0, 1)."""
    return min(int(u * (hi + 1)), hi)


def _box_draws(n: int, gen: torch.Generator) -> tuple[list, list]:
    return torch.rand(n, TRIES, 2, generator=gen, dtype=torch.float64).tolist(), torch.rand(n, 2, generator=gen, dtype=torch.float64).tolist()


def rrc_boxes(n: int, H: int, W: int, scale, ratio, gen: torch.Generator) -> torch.Tensor:
    """(n, 4) int64 random-resized-crop boxes."""
    tries, pos = _box_draws(n, gen)
    return torch.tensor([rrc_rule(H, W, scale, ratio, t, p) for t, p in zip(tries, pos)], dtype=torch.int64).view(n, 4)


def erase_boxes(n: int, H: int, W: int, prob: float, gen: torch.Generator) -> torch.Tensor:
    """(n, 4) int64 erasing boxes; h == 0 where the sample is not erased (probability or no fit)."""
    on = (torch.rand(n, generator=gen, dtype=torch.float64) < prob).tolist()
    tries, pos = _box_draws(n, gen)
    boxes = [(erase_rule(H, W, t, p) if o else None) or (0, 0, 0, 0) for o, t, p in zip(on, tries, pos)]
    return torch.tensor(boxes, dtype=torch.int64).view(n, 4)


def rrc_box(H: int, W: int, scale, ratio, gen: torch.Generator) -> tuple[int, int, int, int]:
    """One random-resized-crop box (the DALI image graph's crops are planned with it)."""
    return tuple(rrc_boxes(1, H, W, scale, ratio, gen)[0].tolist())


def erase_box(H: int, W: int, gen: torch.Generator) -> tuple[int, int, int, int] | None:
    """One erasing box, or None when no try fits."""
    box = erase_boxes(1, H, W, 1.0, gen)[0].tolist()
    return tuple(box) if box[2] else None
