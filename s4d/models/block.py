"""Pre-norm transformer block with an optional expert mixture beside the FFN.

``x = x + Attn(LN1 x)``; ``h = LN2 x``; ``x = x + FFN(h) [+ MoAE(h)]``. The FFN is a timm
``Mlp`` or, for the ViT-MoE baseline, a ``MixtureOfExperts``; sub-layers are passed in.
"""

from __future__ import annotations

import torch
from timm.layers import DropPath
from torch import nn

from .moe import MoEAux


class Block(nn.Module):
    def __init__(
        self,
        dim: int,
        attn: nn.Module,
        mlp: nn.Module,
        moae: nn.Module | None = None,
        ln_eps: float = 1e-6,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=ln_eps)
        self.attn = attn
        self.norm2 = nn.LayerNorm(dim, eps=ln_eps)
        self.mlp = mlp
        self.moae = moae
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x_BND: torch.Tensor) -> tuple[torch.Tensor, list[MoEAux]]:
        aux: list[MoEAux] = []
        x_BND = x_BND + self.drop_path(self.attn(self.norm1(x_BND)))
        h_BND = self.norm2(x_BND)
        y_BND = self.mlp(h_BND)
        if isinstance(y_BND, tuple):  # mixture of FFN experts
            y_BND, a = y_BND
            aux.append(a)
        if self.moae is not None:
            m_BND, a = self.moae(h_BND)
            y_BND = y_BND + m_BND
            aux.append(a)
        return x_BND + self.drop_path(y_BND), aux
