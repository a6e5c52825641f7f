"""Tubelet patch embedding: Conv3d with kernel = stride = (tubelet, patch, patch), no CLS token."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TubeletEmbed(nn.Module):
    """(B, C, T, H, W) video or (B, C, H, W) image -> (B, N, D) tokens in (t, h, w) order.

    An image is a one-frame video replicated to ``tubelet`` frames. Convolving the replicated
    frames equals one 2-D convolution with the kernel summed over time, which is what we run
    (no copy of the image, same result up to float rounding).
    """

    def __init__(self, in_chans: int, dim: int, tubelet: int, patch: int) -> None:
        super().__init__()
        self.tubelet = tubelet
        self.patch = patch
        self.proj = nn.Conv3d(in_chans, dim, kernel_size=(tubelet, patch, patch), stride=(tubelet, patch, patch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 5:
            if x.shape[2] % self.tubelet:
                raise ValueError(f"video has {x.shape[2]} frames; need a multiple of the tubelet size {self.tubelet}")
            tokens = self.proj(x)  # (B, D, t, h, w)
        elif x.ndim == 4:
            weight_DC11 = self.proj.weight.sum(dim=2)
            tokens = F.conv2d(x, weight_DC11, self.proj.bias, stride=self.patch)  # (B, D, h, w)
        else:
            raise ValueError(f"expected (B,C,T,H,W) video or (B,C,H,W) image, got shape {tuple(x.shape)}")
        return tokens.flatten(2).transpose(1, 2)
