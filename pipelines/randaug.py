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
mean) are taken per frame, as PIL does on each frame. The ops are torchvision's tensor
functionals, which follow PIL's definitions; parameters come from a ``torch.Generator`` so a
run is a pure function of its seed. ``tests/test_augment.py`` compares the distribution of the
pixel change with timm's own transform.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torchvision.transforms.v2.functional as TF

OPS = (
    "AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing", "SolarizeIncreasing", "SolarizeAdd",
    "ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing", "SharpnessIncreasing",
    "ShearX", "ShearY", "TranslateXRel", "TranslateYRel",
)  # timm's _RAND_INCREASING_TRANSFORMS, in its order
FILL = 128
LEVEL_DENOM = 10.0


@dataclass(frozen=True)
class RandAugmentSpec:
    """timm's ``rand-mM-nN[-mstdS][-pP][-inc1]`` string, parsed. Only the increasing op set is
    implemented (the reference uses ``inc1``)."""

    magnitude: float = 7.0
    num_ops: int = 4
    magnitude_std: float = 0.5
    prob: float = 0.5

    def __post_init__(self) -> None:
        if self.num_ops < 0:
            raise ValueError(f"randaugment: n must be >= 0, got {self.num_ops}")
        if not 0 <= self.magnitude <= LEVEL_DENOM:
            raise ValueError(f"randaugment: m must be in 0..10 (timm's scale), got {self.magnitude}")
        if self.magnitude_std < 0 or not 0 <= self.prob <= 1:
            raise ValueError(f"randaugment: mstd must be >= 0 and p in 0..1, got {self.magnitude_std}, {self.prob}")

    @staticmethod
    def parse(text: str) -> "RandAugmentSpec":
        parts = text.split("-")
        if parts[0] != "rand":
            raise ValueError(f"randaugment: {text!r} must start with 'rand-' (timm notation, e.g. rand-m7-n4-mstd0.5-inc1)")
        values: dict[str, float] = {}
        for part in parts[1:]:
            m = re.fullmatch(r"(mstd|inc|m|n|p)(\d+(?:\.\d+)?)", part)
            if m is None:
                raise ValueError(f"randaugment: unknown part {part!r} in {text!r} (known: m, n, mstd, p, inc)")
            values[m.group(1)] = float(m.group(2))
        if values.get("inc", 1.0) != 1.0:
            raise ValueError(f"randaugment: only the increasing op set (inc1) is implemented, got {text!r}")
        return RandAugmentSpec(magnitude=values.get("m", 10.0), num_ops=int(values.get("n", 2)),
                               magnitude_std=values.get("mstd", 0.0), prob=values.get("p", 0.5))

    def __str__(self) -> str:
        return f"rand-m{self.magnitude:g}-n{self.num_ops}-mstd{self.magnitude_std:g}-p{self.prob:g}-inc1"


def _uniform(gen: torch.Generator) -> float:
    return float(torch.rand((), generator=gen))


def _signed(value: float, gen: torch.Generator) -> float:
    return -value if _uniform(gen) > 0.5 else value


Affine = tuple[float, float, float, float, float, float]


def host_path(x: torch.Tensor) -> bool:
    """True: the OpenCV branch (CPU tensors); False: the batched-kernel branch the GPU takes.
    One switch, so the tests can force the GPU branch on real CPU tensors (layout bugs that the
    fake-CUDA tests cannot see)."""
    return x.device.type == "cpu"


def warp(x: torch.Tensor, m: Affine) -> torch.Tensor:
    """PIL's ``Image.transform(AFFINE, m)`` on uint8 (..., H, W): output pixel centre (u, v)
    samples the input at (m0 u + m1 v + m2, m3 u + m4 v + m5), bilinear, grey fill outside.
    OpenCV on a CPU (uint8, ~3x faster than ``grid_sample`` there), ``grid_sample`` elsewhere."""
    return warp_cv2(x, m) if host_path(x) else warp_grid(x, m)


def _hwc(x: torch.Tensor) -> np.ndarray:
    """(T, 3, H, W) or (3, H, W) uint8 -> (N, H, W, 3) numpy; a view (no copy) when ``x`` is
    channels-last in memory, as the decoders' frames are."""
    H, W = x.shape[-2:]
    return x.reshape(-1, 3, H, W).permute(0, 2, 3, 1).contiguous().numpy()


def _back(a: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    """(N, H, W, 3) numpy -> the shape of ``like``, channels-last in memory."""
    t = torch.from_numpy(a).permute(0, 3, 1, 2)
    return t if like.dim() == 4 else t[0]


def warp_cv2(x: torch.Tensor, m: Affine) -> torch.Tensor:
    """One OpenCV warp per frame (all three channels at once)."""
    H, W = x.shape[-2:]
    a, b, c, d, e, f = m  # OpenCV puts pixel centres at integers: shift PIL's half-pixel convention
    inverse = np.array([[a, b, c + 0.5 * (a + b) - 0.5], [d, e, f + 0.5 * (d + e) - 0.5]], dtype=np.float64)
    frames = _hwc(x)
    out = np.empty_like(frames)
    for i, frame in enumerate(frames):
        cv2.warpAffine(frame, inverse, (W, H), dst=out[i], flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                       borderMode=cv2.BORDER_CONSTANT, borderValue=(FILL, FILL, FILL))
    return _back(out, x)


def warp_grid(x: torch.Tensor, m: Affine) -> torch.Tensor:
    """One ``grid_sample`` over all frames and channels; the fill by sampling ``x - 128``."""
    H, W = x.shape[-2:]
    # built on the device from Python scalars: no host-to-device copy per op
    v, u = torch.meshgrid(torch.arange(H, dtype=torch.float32, device=x.device) + 0.5,
                          torch.arange(W, dtype=torch.float32, device=x.device) + 0.5, indexing="ij")
    gx = (m[0] * u + m[1] * v + m[2]) * (2 / W) - 1
    gy = (m[3] * u + m[4] * v + m[5]) * (2 / H) - 1
    grid = torch.stack([gx, gy], dim=-1)
    flat = x.reshape(-1, *x.shape[-3:]).float() - FILL
    out = torch.nn.functional.grid_sample(flat, grid.expand(flat.shape[0], H, W, 2), mode="bilinear",
                                          padding_mode="zeros", align_corners=False)
    return (out + FILL).round_().clamp_(0, 255).to(torch.uint8).reshape(x.shape)


def rotation(deg: float, H: int, W: int) -> Affine:
    """PIL's ``rotate`` (counter-clockwise about the image centre, no expand) as an inverse map."""
    a = math.radians(deg)
    c, s = math.cos(a), math.sin(a)
    cx, cy = W / 2, H / 2
    return (c, -s, cx - c * cx + s * cy, s, c, cy - s * cx - c * cy)


def lut(x: torch.Tensor, table_PL: torch.Tensor) -> torch.Tensor:
    """Pointwise uint8 op by lookup: ``table_PL`` is one 256-entry table (1, 256) or one per
    plane (P, 256) in (frame, channel) order, for ``x`` (T, 3, H, W) or (3, H, W). OpenCV's LUT
    on a CPU (``torch.where`` on uint8 is ~25x slower), a gather elsewhere."""
    H, W = x.shape[-2:]
    tables = table_PL.to(device=x.device, dtype=torch.uint8)
    if host_path(x):
        frames = _hwc(x)
        out = np.empty_like(frames)
        if len(tables) == 1:
            cv2.LUT(frames.reshape(-1, W * 3), tables[0].numpy(), dst=out.reshape(-1, W * 3))
        else:  # one 3-channel table per frame
            per_frame = tables.view(-1, 3, 256).permute(0, 2, 1).contiguous().numpy()  # (N, 256, 3)
            for i, frame in enumerate(frames):
                cv2.LUT(frame, per_frame[i][:, None, :], dst=out[i])
        return _back(out, x)
    planes = x.reshape(-1, H, W)
    idx = planes.long() + (256 * torch.arange(len(tables), device=x.device).view(-1, 1, 1) if len(tables) > 1 else 0)
    return tables.reshape(-1)[idx].reshape(x.shape)


def levels(device: torch.device) -> torch.Tensor:
    """(256,) int64 0..255, made on ``device`` (a GPU fills it itself: nothing uploaded), so
    every table below is computed where it is used."""
    return torch.arange(256, device=device)


def _autocontrast(x: torch.Tensor) -> torch.Tensor:
    """PIL's ``ImageOps.autocontrast`` per plane (torchvision's formula: stretch min..max to
    0..255, truncate; a flat plane is left alone), as per-plane tables."""
    H, W = x.shape[-2:]
    planes = x.reshape(-1, 3, H, W)  # a view, whatever the memory format
    lo, hi = planes.amin(dim=(-2, -1)).flatten().float(), planes.amax(dim=(-2, -1)).flatten().float()
    flat = hi == lo
    scale = torch.where(flat, torch.ones_like(lo), 255.0 / (hi - lo).clamp(min=1))
    lo = torch.where(flat, torch.zeros_like(lo), lo)
    return lut(x, ((levels(x.device)[None].float() - lo[:, None]) * scale[:, None]).clamp(0, 255).to(torch.uint8))


def _sharpness(x: torch.Tensor, factor: float) -> torch.Tensor:
    """PIL's ImageEnhance.Sharpness: blend with the SMOOTH-filtered image (3x3 kernel of ones
    with 5 at the centre, /13; the border rows and columns keep their pixels). Same as
    torchvision's ``adjust_sharpness`` to +-1, which is ~20x slower on a CPU clip."""
    H, W = x.shape[-2:]
    if host_path(x):  # OpenCV on all frames stacked; each frame's border is put back
        frames = _hwc(x)
        tall = frames.reshape(-1, W, 3)
        smooth = cv2.filter2D(tall, -1, _SMOOTH, borderType=cv2.BORDER_REPLICATE).reshape(frames.shape)
        smooth[:, [0, -1]] = frames[:, [0, -1]]
        smooth[:, :, [0, -1]] = frames[:, :, [0, -1]]
        return _back(cv2.addWeighted(tall, factor, smooth.reshape(-1, W, 3), 1.0 - factor, 0.0).reshape(frames.shape), x)
    f = x.float()
    rows = f[..., :-2, :] + f[..., 1:-1, :] + f[..., 2:, :]
    box = rows[..., :-2] + rows[..., 1:-1] + rows[..., 2:]
    smooth_f = f.clone()
    smooth_f[..., 1:-1, 1:-1] = ((box + 4 * f[..., 1:-1, 1:-1]) / 13).round_()
    return (smooth_f + factor * (f - smooth_f)).clamp_(0, 255).round_().to(torch.uint8)


def _equalize(x: torch.Tensor) -> torch.Tensor:
    """PIL's ``ImageOps.equalize`` per plane: step = (pixels - count of the top level) // 255,
    table[i] = (step // 2 + pixels below level i) // step; identity when step is 0."""
    H, W = x.shape[-2:]
    if host_path(x):  # OpenCV's histogram is ~10x faster than a bincount over int64
        hist = torch.from_numpy(np.stack([cv2.calcHist([f], [c], None, [256], [0, 256]).ravel()
                                          for f in _hwc(x) for c in range(3)])).long()
    else:  # scatter_add_ into a fixed-size buffer: bincount reads its output size back to the host
        planes = x.reshape(-1, H * W)  # channels-last frames: a strided view or a copy, never .view
        P = planes.shape[0]
        idx = (planes.long() + 256 * torch.arange(P, device=x.device).view(-1, 1)).reshape(-1)
        hist = torch.zeros(P * 256, dtype=torch.int64, device=x.device)
        hist = hist.scatter_add_(0, idx, torch.ones((), dtype=torch.int64, device=x.device).expand(idx.shape)).view(P, 256)
    top = hist.shape[1] - 1 - (hist.flip(1) > 0).int().argmax(dim=1)  # highest level present
    step = (H * W - hist.gather(1, top.view(-1, 1)).squeeze(1)) // 255
    below = hist.cumsum(1) - hist
    table = ((step.view(-1, 1) // 2 + below) // step.clamp(min=1).view(-1, 1)).clamp(max=255)
    table = torch.where((step > 0).view(-1, 1), table, levels(x.device)[None])
    return lut(x, table)


_SMOOTH = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], np.float32) / 13


def apply_op(x: torch.Tensor, name: str, level: float, gen: torch.Generator) -> torch.Tensor:
    """One op at ``level`` (0..10) on uint8 (..., 3, H, W); signs are drawn from ``gen``."""
    H, W = x.shape[-2:]
    L = levels(x.device)
    if name == "AutoContrast":
        return _autocontrast(x)
    if name == "Equalize":
        return _equalize(x)
    if name == "Invert":
        return lut(x, 255 - L[None])
    if name == "Rotate":
        return warp(x, rotation(_signed(level / LEVEL_DENOM * 30.0, gen), H, W))
    if name == "PosterizeIncreasing":
        bits = 4 - int(level / LEVEL_DENOM * 4)
        return x & (0xFF ^ (2 ** (8 - bits) - 1)) if bits < 8 else x  # bits 0 -> black, as PIL
    if name == "SolarizeIncreasing":
        thresh = 256 - min(256, int(level / LEVEL_DENOM * 256))
        return lut(x, torch.where(L >= thresh, 255 - L, L)[None])
    if name == "SolarizeAdd":  # x < 128 gets + add, capped at 255
        add = min(128, int(level / LEVEL_DENOM * 110))
        return lut(x, torch.where(L < 128, (L + add).clamp(max=255), L)[None])
    if name == "BrightnessIncreasing":  # pointwise: torchvision's formula tabulated
        factor = max(0.1, 1.0 + _signed(level / LEVEL_DENOM * 0.9, gen))
        return lut(x, TF.adjust_brightness(L.to(torch.uint8).view(1, 1, 256).expand(3, 1, 256), factor)[:1, 0])
    if name.endswith("Increasing"):  # Color, Contrast, Brightness, Sharpness: enhance factor
        factor = max(0.1, 1.0 + _signed(level / LEVEL_DENOM * 0.9, gen))
        fn = {"ColorIncreasing": TF.adjust_saturation, "ContrastIncreasing": TF.adjust_contrast,
              "SharpnessIncreasing": _sharpness}[name]
        return fn(x, factor)
    if name in ("ShearX", "ShearY"):  # PIL shears about the top-left corner
        f = _signed(level / LEVEL_DENOM * 0.3, gen)
        return warp(x, (1, f, 0, 0, 1, 0) if name == "ShearX" else (1, 0, 0, f, 1, 0))
    if name in ("TranslateXRel", "TranslateYRel"):
        pct = _signed(level / LEVEL_DENOM * 0.45, gen)
        return warp(x, (1, 0, pct * W, 0, 1, 0) if name == "TranslateXRel" else (1, 0, 0, 0, 1, pct * H))
    raise ValueError(f"randaugment: unknown op {name!r}")


class RandAugment:
    """``__call__(x, gen)``: uint8 (3, H, W) image or (T, 3, H, W) clip -> same shape; one
    draw of ops and arguments for the whole clip."""

    def __init__(self, spec: RandAugmentSpec) -> None:
        self.spec = spec

    def draw(self, gen: torch.Generator) -> list[tuple[str, float]]:
        """The ops that will be applied and their magnitudes (skipped ops left out)."""
        s = self.spec
        picks = torch.randint(len(OPS), (s.num_ops,), generator=gen).tolist()  # with replacement
        chosen = []
        for i in picks:
            if s.prob < 1.0 and _uniform(gen) > s.prob:
                continue
            m = s.magnitude
            if s.magnitude_std > 0:
                m = m + s.magnitude_std * float(torch.randn((), generator=gen))
            chosen.append((OPS[i], max(0.0, min(m, LEVEL_DENOM))))
        return chosen

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        for name, level in self.draw(gen):
            x = apply_op(x, name, level, gen)
        return x
