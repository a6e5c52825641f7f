"""Multi-head self-attention with separate q and v biases (k bias is zero), fused via SDPA."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        if qkv_bias:
            self.q_bias = nn.Parameter(torch.zeros(dim))
            self.v_bias = nn.Parameter(torch.zeros(dim))
        else:
            self.q_bias = self.v_bias = None
        self.proj = nn.Linear(dim, dim)

    def heads(self, x_BND: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k, v, each (B, H, N, D/H)."""
        B, N, D = x_BND.shape
        bias = None
        if self.q_bias is not None:
            bias = torch.cat((self.q_bias, torch.zeros_like(self.v_bias), self.v_bias))
        qkv = F.linear(x_BND, self.qkv.weight, bias)
        q_BHNd, k_BHNd, v_BHNd = qkv.view(B, N, 3, self.num_heads, D // self.num_heads).permute(2, 0, 3, 1, 4)
        return q_BHNd, k_BHNd, v_BHNd

    def forward(self, x_BND: torch.Tensor) -> torch.Tensor:
        B, N, D = x_BND.shape
        out_BHNd = F.scaled_dot_product_attention(*self.heads(x_BND))
        return self.proj(out_BHNd.transpose(1, 2).reshape(B, N, D))
