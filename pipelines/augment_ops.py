"""The augmentation's uint8 kernels. They draw nothing: every argument comes in.

Frames are (..., 3, H, W) uint8, often channels-last in memory (as the decoders hand them
over). Two branches, chosen by ``host_path``: OpenCV on CPU tensors (warps, lookups, filters and
histograms are several times faster there than torch's uint8 kernels), and batched torch
kernels elsewhere, where per-frame arguments are device tensors (one table per plane, one
affine matrix or blend factor per frame) so a whole batch is one call. Both follow PIL's
definitions; the tests hold them to each other and to PIL.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

FILL = 128  # grey outside a warped frame
_SMOOTH = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], np.float32) / 13

Affine = tuple[float, float, float, float, float, float]


def host_path(x: torch.Tensor) -> bool:
    """True: the OpenCV branch (CPU tensors); False: the batched branch a GPU takes. One switch,
    so the tests can force the GPU branch on real CPU tensors (layout bugs that the fake-CUDA
    tests cannot see)."""
    return x.device.type == "cpu"


def levels(device: torch.device) -> torch.Tensor:
    """(256,) int64 0..255, made on ``device`` (a GPU fills it itself: nothing uploaded)."""
    return torch.arange(256, device=device)


def _hwc(x: torch.Tensor) -> np.ndarray:
    """(T, 3, H, W) or (3, H, W) uint8 -> (N, H, W, 3) numpy; a view (no copy) when ``x`` is
    channels-last in memory, as the decoders' frames are."""
    H, W = x.shape[-2:]
    return x.reshape(-1, 3, H, W).permute(0, 2, 3, 1).contiguous().numpy()


def _back(a: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    """(N, H, W, 3) numpy -> the shape of ``like``, channels-last in memory."""
    t = torch.from_numpy(a).permute(0, 3, 1, 2)
    return t.reshape(like.shape) if like.dim() != 4 else t


# ----------------------------------------------------------------------------- warps
def warp_cv2(x: torch.Tensor, m: Affine) -> torch.Tensor:
    """PIL's ``Image.transform(AFFINE, m)``: output pixel centre (u, v) samples the input at
    (m0 u + m1 v + m2, m3 u + m4 v + m5), bilinear, grey fill. One OpenCV warp per frame."""
    H, W = x.shape[-2:]
    a, b, c, d, e, f = m  # OpenCV puts pixel centres at integers: shift PIL's half-pixel convention
    inverse = np.array([[a, b, c + 0.5 * (a + b) - 0.5], [d, e, f + 0.5 * (d + e) - 0.5]], dtype=np.float64)
    frames = _hwc(x)
    out = np.empty_like(frames)
    for i, frame in enumerate(frames):
        cv2.warpAffine(
            frame,
            inverse,
            (W, H),
            dst=out[i],
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=(FILL, FILL, FILL),
        )
    return _back(out, x)


def warp_grid(x_N3HW: torch.Tensor, theta_N6: torch.Tensor) -> torch.Tensor:
    """The same warp as one ``grid_sample`` over N frames, each with its own matrix (a device
    tensor); the fill by sampling ``x - 128`` with zero padding."""
    H, W = x_N3HW.shape[-2:]
    dev = x_N3HW.device
    v = (torch.arange(H, dtype=torch.float32, device=dev) + 0.5).view(1, H, 1)
    u = (torch.arange(W, dtype=torch.float32, device=dev) + 0.5).view(1, 1, W)
    t = theta_N6.float().view(-1, 6, 1, 1)
    gx = (t[:, 0] * u + t[:, 1] * v + t[:, 2]) * (2 / W) - 1
    gy = (t[:, 3] * u + t[:, 4] * v + t[:, 5]) * (2 / H) - 1
    flat = x_N3HW.float() - FILL
    out = F.grid_sample(flat, torch.stack([gx, gy], dim=-1), mode="bilinear", padding_mode="zeros", align_corners=False)
    return (out + FILL).round_().clamp_(0, 255).to(torch.uint8)


# ----------------------------------------------------------------------------- lookups
def lut(x: torch.Tensor, table_PL: torch.Tensor) -> torch.Tensor:
    """Pointwise uint8 op by lookup: ``table_PL`` is one 256-entry table (1, 256) or one per
    plane (P, 256) in (frame, channel) order. OpenCV's LUT on a CPU, a gather elsewhere."""
    H, W = x.shape[-2:]
    tables = table_PL.to(dtype=torch.uint8)
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


def autocontrast_tables(x: torch.Tensor) -> torch.Tensor:
    """PIL's ``ImageOps.autocontrast`` per plane (torchvision's formula: stretch min..max to
    0..255, truncate; a flat plane is left alone): (P, 256) uint8 tables."""
    H, W = x.shape[-2:]
    planes = x.reshape(-1, 3, H, W)  # a view, whatever the memory format
    lo, hi = planes.amin(dim=(-2, -1)).flatten().float(), planes.amax(dim=(-2, -1)).flatten().float()
    flat = hi == lo
    scale = torch.where(flat, torch.ones_like(lo), 255.0 / (hi - lo).clamp(min=1))
    lo = torch.where(flat, torch.zeros_like(lo), lo)
    return ((levels(x.device)[None].float() - lo[:, None]) * scale[:, None]).clamp(0, 255).to(torch.uint8)


def equalize_tables(x: torch.Tensor) -> torch.Tensor:
    """PIL's ``ImageOps.equalize`` per plane: step = (pixels - count of the top level) // 255,
    table[i] = (step // 2 + pixels below level i) // step; identity when step is 0."""
    H, W = x.shape[-2:]
    if host_path(x):  # OpenCV's histogram is ~10x faster than a scatter over int64
        hist = torch.from_numpy(np.stack([cv2.calcHist([f], [c], None, [256], [0, 256]).ravel() for f in _hwc(x) for c in range(3)])).long()
    else:  # scatter_add_ into a fixed-size buffer: bincount reads its output size back to the host
        planes = x.reshape(-1, H * W).long()  # (P, H*W); channels-last frames: a copy, never .view
        hist = torch.zeros(planes.shape[0], 256, dtype=torch.int64, device=x.device)
        hist = hist.scatter_add_(1, planes, torch.ones((), dtype=torch.int64, device=x.device).expand(planes.shape))
    top = hist.shape[1] - 1 - (hist.flip(1) > 0).int().argmax(dim=1)  # highest level present
    step = (H * W - hist.gather(1, top.view(-1, 1)).squeeze(1)) // 255
    below = hist.cumsum(1) - hist
    table = ((step.view(-1, 1) // 2 + below) // step.clamp(min=1).view(-1, 1)).clamp(max=255)
    return torch.where((step > 0).view(-1, 1), table, levels(x.device)[None]).to(torch.uint8)


# ----------------------------------------------------------------------------- blends
def _per_frame(f_N: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(N,) factors -> broadcastable over (N, 3, H, W)."""
    return f_N.float().view(-1, 1, 1, 1).to(x.device)


def _blend(x_N3HW: torch.Tensor, other: torch.Tensor, f_N: torch.Tensor) -> torch.Tensor:
    """torchvision's ``_blend`` per frame: ``f x + (1 - f) other``, clamped, truncated to uint8
    (``f == 1`` gives ``x`` exactly)."""
    f = _per_frame(f_N, x_N3HW)
    return (x_N3HW.float() * f + other * (1.0 - f)).clamp_(0, 255).to(torch.uint8)


def _grey(x_N3HW: torch.Tensor) -> torch.Tensor:
    """torchvision's luma (0.2989 R + 0.587 G + 0.114 B), floored as it does for uint8: (N, 1, H, W)."""
    r, g, b = x_N3HW.float().unbind(dim=-3)
    return r.mul(0.2989).add_(g, alpha=0.587).add_(b, alpha=0.114).floor_().unsqueeze(-3)


def saturation(x_N3HW: torch.Tensor, f_N: torch.Tensor) -> torch.Tensor:
    """torchvision's ``adjust_saturation`` with one factor per frame."""
    return _blend(x_N3HW, _grey(x_N3HW), f_N)


def contrast(x_N3HW: torch.Tensor, f_N: torch.Tensor) -> torch.Tensor:
    """torchvision's ``adjust_contrast`` with one factor per frame (each frame's own mean grey)."""
    return _blend(x_N3HW, _grey(x_N3HW).mean(dim=(-3, -2, -1), keepdim=True), f_N)


def sharpness(x: torch.Tensor, f_N: torch.Tensor) -> torch.Tensor:
    """PIL's ImageEnhance.Sharpness: blend with the SMOOTH-filtered image (3x3 kernel of ones
    with 5 at the centre, /13; the border rows and columns keep their pixels). ``f_N`` has one
    factor per frame of ``x`` (N, 3, H, W), or one for all (CPU: OpenCV on the frames stacked)."""
    H, W = x.shape[-2:]
    if host_path(x):
        factor = float(f_N.reshape(-1)[0])
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
    return (smooth_f + _per_frame(f_N, x) * (f - smooth_f)).clamp_(0, 255).round_().to(torch.uint8)
