"""The reference implementation's slow paths, re-created on our modules for side-by-side timing.

``reference_style(model)`` returns a deep copy of an S4D/ViT model (same weights) whose
attention materialises the (N x N) softmax matrix and whose MoAE layers run a Python loop over
the experts with ``nonzero`` + ``index_add_``, as the authors' code does. Only the execution
differs: the benchmark checks that both give the same logits before timing them.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from s4d.models.attention import Attention
from s4d.models.moe import MixtureOfExperts, MoEAux


class MaterialisedAttention(Attention):
    """q k^T * scale -> softmax -> @ v, with the full (B, H, N, N) matrix in memory."""

    def forward(self, x_BND: torch.Tensor) -> torch.Tensor:
        B, N, D = x_BND.shape
        q, k, v = self.heads(x_BND)
        attn_BHNN = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
        out = attn_BHNN.softmax(dim=-1) @ v
        return self.proj(out.transpose(1, 2).reshape(B, N, D))


class LoopMoE(MixtureOfExperts):
    """Per-expert loop: gather the expert's tokens with ``nonzero``, run it, ``index_add_`` back."""

    def forward(self, x_BND: torch.Tensor) -> tuple[torch.Tensor, MoEAux]:
        B, N, D = x_BND.shape
        x_TD = x_BND.reshape(B * N, D)
        weights_TK, experts_TK, probs_TE = self.router(x_TD)
        ex = self.experts
        out_TD = torch.zeros_like(x_TD)
        for e in range(self.num_experts):
            token, slot = (experts_TK == e).nonzero(as_tuple=True)
            if token.numel() == 0:
                continue
            h = F.gelu(x_TD[token] @ ex.w1[e] + ex.b1[e])
            y = h @ ex.w2[e] + ex.b2[e]
            if ex.residual:
                y = y + x_TD[token]
            out_TD.index_add_(0, token, y * weights_TK[token, slot, None])
        gates_TE = torch.zeros_like(probs_TE).scatter(1, experts_TK, weights_TK.to(probs_TE.dtype))
        return out_TD.view(B, N, D), MoEAux(gates_TE, x_BND.new_zeros(()))


def reference_style(model: nn.Module) -> nn.Module:
    ref = copy.deepcopy(model)
    for module in ref.modules():
        if type(module) is Attention:
            module.__class__ = MaterialisedAttention
        elif type(module) is MixtureOfExperts:
            module.__class__ = LoopMoE
    return ref
