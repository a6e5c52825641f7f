"""RandAugment as the reference runs it (timm's ``rand_augment_transform``), on uint8 tensors.

The authors' code builds timm's ``rand-m7-n4-mstd0.5-inc1`` for clips and
``rand-m9-n2-mstd0.5-inc1`` for images. Its semantics, which DALI's and torchvision's
RandAugment do not share (their ``m`` is on a 0..30 scale, every drawn op is applied, no
noise):

- ``n`` ops drawn uniformly *with replacement* from the 15-op "increasing" set;
- each drawn op applied with probability ``p`` (0.5);
- magnitude ``m`` on a 0..10 scale plus Gaussian noise (``mstd``), clipped to 0..10, drawn per
  applied op; signed ops negate their argument with probability 0.5;
- translations relative to the image size (45% at m=10), fill grey (128), bilinear resampling.

A clip (T, 3, H, W) gets the same ops and arguments on every frame (the reference applies one
op object to the list of frames); per-frame statistics (auto-contrast, equalise, the contrast
mean) are taken per frame, as PIL does on each frame.

The ops are a table (``_OPS``): each op is one of a few kinds (a lookup table, a per-plane
statistic, a blend, an affine warp) plus the rule that turns (level, sign) into its argument.
``plan`` turns a batch's draws (``augment_params.draw_randaugment``) into per-sample arguments
on the host; ``apply_sample`` runs one sample's rounds (the CPU path, OpenCV kernels);
``apply_batched`` runs each round over the whole batch in a fixed number of calls (the device
path: identity arguments for the samples whose op is of another kind).
``tests/test_augment.py`` compares the distribution of the pixel change with timm's own transform.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torchvision.transforms.v2.functional as TF

from . import augment_ops
from .augment_ops import autocontrast_tables, contrast, equalize_tables, levels, lut, saturation, sharpness, warp_cv2, warp_grid
from .augment_params import draw_randaugment
from .randaug_spec import LEVEL_DENOM, OPS, RandAugmentSpec

__all__ = ["OPS", "RandAugment", "RandAugmentSpec", "Plan", "apply_batched", "apply_op", "apply_sample", "plan"]

# kinds of op: what a batched round computes for them
NONE, LUT, AUTOCONTRAST, EQUALIZE, SATURATION, CONTRAST, SHARPNESS, AFFINE = range(8)
_BLENDS = {SATURATION: saturation, CONTRAST: contrast, SHARPNESS: sharpness}
IDENTITY: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def rotation(deg: float, H: int, W: int) -> tuple[float, ...]:
    """PIL's ``rotate`` (counter-clockwise about the image centre, no expand) as an inverse map."""
    a = math.radians(deg)
    c, s = math.cos(a), math.sin(a)
    cx, cy = W / 2, H / 2
    return (c, -s, cx - c * cx + s * cy, s, c, cy - s * cx - c * cy)


def _factor(level: float, sign: float) -> float:  # Color, Contrast, Brightness, Sharpness: enhance factor
    return max(0.1, 1.0 + sign * level / LEVEL_DENOM * 0.9)


def _posterize(L: torch.Tensor, level: float, sign: float) -> torch.Tensor:
    bits = 4 - int(level / LEVEL_DENOM * 4)
    return L & (0xFF ^ (2 ** (8 - bits) - 1)) if bits < 8 else L  # bits 0 -> black, as PIL


def _solarize(L: torch.Tensor, level: float, sign: float) -> torch.Tensor:
    thresh = 256 - min(256, int(level / LEVEL_DENOM * 256))
    return torch.where(L >= thresh, 255 - L, L)


def _solarize_add(L: torch.Tensor, level: float, sign: float) -> torch.Tensor:  # x < 128 gets + add, capped at 255
    add = min(128, int(level / LEVEL_DENOM * 110))
    return torch.where(L < 128, (L + add).clamp(max=255), L)


def _brightness(L: torch.Tensor, level: float, sign: float) -> torch.Tensor:  # torchvision's formula tabulated
    return TF.adjust_brightness(L.to(torch.uint8).view(1, 1, 256).expand(3, 1, 256), _factor(level, sign))[0, 0].long()


def _shear(axis: int) -> Callable[[float, float, int, int], tuple[float, ...]]:
    def matrix(level: float, sign: float, H: int, W: int) -> tuple[float, ...]:  # PIL shears about the top-left corner
        f = sign * level / LEVEL_DENOM * 0.3
        return (1, f, 0, 0, 1, 0) if axis == 0 else (1, 0, 0, f, 1, 0)

    return matrix


def _translate(axis: int) -> Callable[[float, float, int, int], tuple[float, ...]]:
    def matrix(level: float, sign: float, H: int, W: int) -> tuple[float, ...]:
        pct = sign * level / LEVEL_DENOM * 0.45
        return (1, 0, pct * W, 0, 1, 0) if axis == 0 else (1, 0, 0, 0, 1, pct * H)

    return matrix


# op -> (kind, argument rule): LUT rules give a table from the levels 0..255, AFFINE rules a
# matrix, blend rules a factor
_OPS: dict[str, tuple[int, Callable | None]] = {
    "AutoContrast": (AUTOCONTRAST, None),
    "Equalize": (EQUALIZE, None),
    "Invert": (LUT, lambda L, level, sign: 255 - L),
    "Rotate": (AFFINE, lambda level, sign, H, W: rotation(sign * level / LEVEL_DENOM * 30.0, H, W)),
    "PosterizeIncreasing": (LUT, _posterize),
    "SolarizeIncreasing": (LUT, _solarize),
    "SolarizeAdd": (LUT, _solarize_add),
    "ColorIncreasing": (SATURATION, _factor),
    "ContrastIncreasing": (CONTRAST, _factor),
    "BrightnessIncreasing": (LUT, _brightness),
    "SharpnessIncreasing": (SHARPNESS, _factor),
    "ShearX": (AFFINE, _shear(0)),
    "ShearY": (AFFINE, _shear(1)),
    "TranslateXRel": (AFFINE, _translate(0)),
    "TranslateYRel": (AFFINE, _translate(1)),
}
assert tuple(_OPS) == OPS


@dataclass(frozen=True)
class Plan:
    """Per round r and sample b, on the host: the op's kind, and its argument in the form its
    kind needs (identity elsewhere). ``kinds[r]`` lists the kinds present in round r."""

    kind_RB: torch.Tensor  # int64
    table_RB256: torch.Tensor  # int64 lookup tables (identity unless LUT)
    theta_RB6: torch.Tensor  # float64 PIL inverse maps (identity unless AFFINE)
    factor_RB: torch.Tensor  # float64 blend factors (1 unless a blend)
    kinds: tuple[frozenset[int], ...]

    def packed(self) -> torch.Tensor:
        """(R, B, 1 + 1 + 6 + 256) float32: everything a device round needs, for one upload."""
        return torch.cat([self.kind_RB[..., None].double(), self.factor_RB[..., None], self.theta_RB6, self.table_RB256.double()], dim=-1).float()


def plan(ops_BR: torch.Tensor, levels_BR: torch.Tensor, signs_BR: torch.Tensor, H: int, W: int) -> Plan:
    """Arguments of every sample's ops for frames of H x W."""
    B, R = ops_BR.shape
    L = levels(torch.device("cpu"))
    kind = torch.zeros(R, B, dtype=torch.int64)
    table = L.repeat(R, B, 1)
    theta = torch.tensor(IDENTITY, dtype=torch.float64).repeat(R, B, 1)
    factor = torch.ones(R, B, dtype=torch.float64)
    for (b, r), op, level, sign in zip(
        ((b, r) for b in range(B) for r in range(R)), ops_BR.flatten().tolist(), levels_BR.flatten().tolist(), signs_BR.flatten().tolist()
    ):
        if op < 0:
            continue
        k, rule = _OPS[OPS[op]]
        kind[r, b] = k
        if k == LUT:
            table[r, b] = rule(L, level, sign)
        elif k == AFFINE:
            theta[r, b] = torch.tensor(rule(level, sign, H, W), dtype=torch.float64)
        elif k in _BLENDS:
            factor[r, b] = rule(level, sign)
    kinds = tuple(frozenset(kind[r].tolist()) - {NONE} for r in range(R))
    return Plan(kind, table, theta, factor, kinds)


def apply_sample(x: torch.Tensor, p: Plan, b: int) -> torch.Tensor:
    """Sample ``b``'s rounds on uint8 (T, 3, H, W) or (3, H, W), one op at a time (OpenCV on a CPU)."""
    shape = x.shape
    for r in range(p.kind_RB.shape[0]):
        k = int(p.kind_RB[r, b])
        if k == NONE:
            continue
        x = x.reshape(-1, 3, *shape[-2:])
        if k == LUT:
            x = lut(x, p.table_RB256[r, b][None])
        elif k == AUTOCONTRAST:
            x = lut(x, autocontrast_tables(x))
        elif k == EQUALIZE:
            x = lut(x, equalize_tables(x))
        elif k == AFFINE:
            m = p.theta_RB6[r, b]
            x = warp_cv2(x, tuple(m.tolist())) if augment_ops.host_path(x) else warp_grid(x, m.to(x.device).expand(len(x), 6))
        else:
            x = _BLENDS[k](x, p.factor_RB[r, b].expand(len(x)).to(x.device))
        x = x.reshape(shape)
    return x


def apply_batched(x_BT3HW: torch.Tensor, p: Plan, packed_RBC: torch.Tensor) -> torch.Tensor:
    """Every sample's rounds on uint8 (B, T, 3, H, W), each round over the whole batch: one
    lookup (the LUT ops' tables, and per-plane auto-contrast/equalise tables where those ops
    were drawn), one call per blend kind present, one ``grid_sample`` for the warps. Samples
    whose op is of another kind get the identity argument. ``packed_RBC`` is ``p.packed()`` on
    the device; which kinds are present is known on the host (``p.kinds``): no sync."""
    B, T = x_BT3HW.shape[:2]
    H, W = x_BT3HW.shape[-2:]
    x = x_BT3HW.reshape(B * T, 3, H, W)
    for r, present in enumerate(p.kinds):
        if not present:
            continue
        kind_B = packed_RBC[r, :, 0]
        per_frame = lambda v: v.repeat_interleave(T, dim=0)  # noqa: E731  (B, ...) -> (B*T, ...)
        if present & {LUT, AUTOCONTRAST, EQUALIZE}:
            tables = per_frame(packed_RBC[r, :, 8:].to(torch.uint8)).repeat_interleave(3, dim=0)  # (B*T*3, 256)
            for k, stats in ((AUTOCONTRAST, autocontrast_tables), (EQUALIZE, equalize_tables)):
                if k in present:
                    chosen = per_frame(kind_B == k).repeat_interleave(3, dim=0)[:, None]
                    tables = torch.where(chosen, stats(x), tables)
            x = lut(x, tables)
        for k, blend in _BLENDS.items():
            if k in present:
                x = blend(x, per_frame(torch.where(kind_B == k, packed_RBC[r, :, 1], 1.0)))
        if AFFINE in present:
            x = warp_grid(x, per_frame(packed_RBC[r, :, 2:8]))
    return x.reshape(x_BT3HW.shape)


def apply_op(x: torch.Tensor, name: str, level: float, sign: float = 1.0) -> torch.Tensor:
    """One op at ``level`` (0..10) with ``sign`` on uint8 (..., 3, H, W)."""
    if name not in _OPS:
        raise ValueError(f"randaugment: unknown op {name!r}")
    one = torch.tensor([[OPS.index(name)]])
    return apply_sample(x, plan(one, torch.tensor([[level]], dtype=torch.float64), torch.tensor([[sign]], dtype=torch.float64), *x.shape[-2:]), 0)


class RandAugment:
    """``__call__(x, gen)``: uint8 (3, H, W) image or (T, 3, H, W) clip -> same shape; one
    draw of ops and arguments for the whole clip (a batch of one of ``draw_randaugment``)."""

    def __init__(self, spec: RandAugmentSpec) -> None:
        self.spec = spec

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        d = draw_randaugment(self.spec, 1, gen)
        return apply_sample(x, plan(d.ops_BR, d.levels_BR, d.signs_BR, *x.shape[-2:]), 0)
