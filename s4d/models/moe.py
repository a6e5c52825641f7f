"""Noisy top-k mixture of MLP experts, computed sparsely without host synchronisation.

Shapes: T tokens (batch and sequence flattened), D model width, E experts, K experts per
token, H expert hidden width, S = T*K routed (token, slot) pairs.

The forward pass sorts the S pairs by expert and runs each expert on its contiguous rows with
``torch.nn.functional.grouped_mm`` (offsets stay on the device: no ``nonzero``/``.item()``, so
it runs under ``torch.compile``; per-expert biases are expanded with ``repeat_interleave``
over the sorted rows). Each token's output depends on that token alone unless the
reference capacity limit is switched on (``capacity_factor``), which drops overflow tokens in
batch order exactly like the authors' code.

``grouped_mm`` takes bf16 on CUDA (training and evaluation autocast to it); fp32 on CUDA
(``--amp off``) runs each expert on its own rows after reading the E counts once per layer
(sparse, one sync), and only a compiled fp32 graph takes the dense every-expert fallback.
An ONNX export (``torch.onnx.is_in_onnx_export``) takes the dense path as well, written over
the (T, E) gate matrix: ONNX has no grouped matmul, and the result is the same sum of gate x
expert.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from timm.layers import trunc_normal_
from torch import nn

from .config import MoEConfig


class Routing(NamedTuple):
    weights_TK: torch.Tensor  # gate of each kept expert; softmax over the K kept logits
    experts_TK: torch.Tensor  # int64 expert ids
    probs_TE: torch.Tensor  # softmax over all E (noisy) logits, for the balance loss


class MoEAux(NamedTuple):
    gates_TE: torch.Tensor  # dense gate matrix after capacity dropping (zeros off the top-k)
    balance_loss: torch.Tensor  # scalar, Switch-Transformer style, times balance_loss_weight


class NoisyTopKRouter(nn.Module):
    """``logits = gate(x)``; while training (or always, with ``noise_at_eval``) add noise:
    learned ``N(0,1) * softplus(noise(x))`` (reference code) or fixed ``N(0, noise_std)``
    (the paper's text); keep the top-k and softmax over them."""

    def __init__(self, dim: int, cfg: MoEConfig) -> None:
        super().__init__()
        self.top_k = cfg.top_k
        self.noise_kind = cfg.noise
        self.noise_std = cfg.noise_std
        self.noise_at_eval = cfg.noise_at_eval
        self.gate = nn.Linear(dim, cfg.num_experts)
        self.noise = nn.Linear(dim, cfg.num_experts) if cfg.noise == "learned" else None

    def forward(self, x_TD: torch.Tensor) -> Routing:
        logits_TE = self.gate(x_TD)
        if self.noise_kind != "none" and (self.training or self.noise_at_eval):
            eps_TE = torch.randn_like(logits_TE)
            if self.noise is not None:
                logits_TE = logits_TE + eps_TE * F.softplus(self.noise(x_TD))
            else:
                logits_TE = logits_TE + eps_TE * self.noise_std
        top_TK, experts_TK = logits_TE.topk(self.top_k, dim=-1)
        return Routing(top_TK.softmax(dim=-1), experts_TK, logits_TE.softmax(dim=-1))


def _grouped_supported(x: torch.Tensor, *dims: int) -> bool:
    """``grouped_mm`` needs bf16 on CUDA and 16-byte aligned rows; eager CPU also takes fp32,
    but its compile-time shape check does not."""
    if getattr(F, "grouped_mm", None) is None:
        return False
    if x.device.type == "cuda" or torch.compiler.is_compiling():
        ok_dtype = x.dtype == torch.bfloat16
    else:
        ok_dtype = x.dtype in (torch.float32, torch.bfloat16)
    return ok_dtype and all((d * x.element_size()) % 16 == 0 for d in dims)


class GroupedExperts(nn.Module):
    """E two-layer MLP experts (D -> H -> D, exact GELU) with stacked weights.

    ``w1`` is (E, D, H) and ``w2`` (E, H, D): the reference's per-expert ``fc1.weight`` (H, D)
    transposed, which is the layout ``grouped_mm`` wants. ``residual`` adds the input back
    (the paper's Eq. 8 adapter; the reference code has no residual)."""

    def __init__(self, num_experts: int, dim: int, hidden: int, residual: bool = False) -> None:
        super().__init__()
        self.residual = residual
        self.w1 = nn.Parameter(torch.empty(num_experts, dim, hidden))
        self.b1 = nn.Parameter(torch.zeros(num_experts, hidden))
        self.w2 = nn.Parameter(torch.empty(num_experts, hidden, dim))
        self.b2 = nn.Parameter(torch.zeros(num_experts, dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # The reference's final ``apply(_init_weights)`` overrides the kaiming init its expert
        # constructor asks for: every Linear ends trunc_normal(std 0.02), zero bias (DESIGN §4).
        trunc_normal_(self.w1, std=0.02)
        trunc_normal_(self.w2, std=0.02)
        nn.init.zeros_(self.b1)
        nn.init.zeros_(self.b2)

    def forward(self, x_SD: torch.Tensor, counts_E: torch.Tensor) -> torch.Tensor:
        """Rows of ``x_SD`` are grouped by expert, ``counts_E[e]`` rows for expert e, in expert
        order. Returns (S, D)."""
        if torch.is_autocast_enabled(x_SD.device.type):
            x_SD = x_SD.to(torch.get_autocast_dtype(x_SD.device.type))
        w1, b1, w2, b2 = (p.to(x_SD.dtype) for p in (self.w1, self.b1, self.w2, self.b2))
        S = x_SD.shape[0]

        def per_row(bias_EX: torch.Tensor) -> torch.Tensor:  # (E, X) -> (S, X), rows are sorted
            return torch.repeat_interleave(bias_EX, counts_E, dim=0, output_size=S)

        if _grouped_supported(x_SD, w1.shape[1], w1.shape[2]):
            offs_E = counts_E.cumsum(0).to(torch.int32)
            h_SH = F.gelu(F.grouped_mm(x_SD, w1, offs=offs_E) + per_row(b1))
            y_SD = F.grouped_mm(h_SH, w2, offs=offs_E) + per_row(b2)
        elif not torch.compiler.is_compiling():  # fp32 on CUDA: sparse, one host read of the counts
            rows = x_SD.split(counts_E.tolist())
            y_SD = torch.cat([F.gelu(x_ND @ w1[e] + b1[e]) @ w2[e] + b2[e] for e, x_ND in enumerate(rows)])
        else:  # compiled fp32: every expert on every row, then pick (E/K times the work)
            pick_SE = per_row(torch.eye(w1.shape[0], dtype=x_SD.dtype, device=x_SD.device))
            h_SEH = F.gelu(torch.einsum("sd,edh->seh", x_SD, w1) + b1)
            y_SD = torch.einsum("seh,ehd,se->sd", h_SEH, w2, pick_SE) + per_row(b2)
        return x_SD + y_SD if self.residual else y_SD

    def dense(self, x_TD: torch.Tensor, gates_TE: torch.Tensor) -> torch.Tensor:
        """sum_e gates_TE[:, e] * expert_e(x_TD) with every expert on every token: (T, D).
        Plain einsums, for graphs without a grouped matmul (ONNX)."""
        h_TEH = F.gelu(torch.einsum("td,edh->teh", x_TD, self.w1) + self.b1)
        y_TED = torch.einsum("teh,ehd->ted", h_TEH, self.w2) + self.b2
        if self.residual:
            y_TED = y_TED + x_TD[:, None]
        return torch.einsum("te,ted->td", gates_TE.to(y_TED.dtype), y_TED)


def capacity_mask(experts_TK: torch.Tensor, num_experts: int, capacity: int) -> torch.Tensor:
    """Reference token dropping: each expert takes the tokens routed to it in flattened batch
    order and drops those past ``capacity``. Returns a (T, K) keep mask."""
    T = experts_TK.shape[0]
    routed_TE = torch.zeros(T, num_experts, dtype=torch.int32, device=experts_TK.device)
    routed_TE.scatter_(1, experts_TK, 1)
    position_TE = routed_TE.cumsum(dim=0) - 1
    keep_TE = (routed_TE > 0) & (position_TE < capacity)
    return keep_TE.gather(1, experts_TK)


class MixtureOfExperts(nn.Module):
    """Router + experts. ``(B, N, D) -> ((B, N, D), MoEAux)``; output = sum of gate x expert."""

    def __init__(self, dim: int, cfg: MoEConfig) -> None:
        super().__init__()
        self.num_experts = cfg.num_experts
        self.top_k = cfg.top_k
        self.capacity_factor = cfg.capacity_factor
        self.balance_loss_weight = cfg.balance_loss_weight
        self.router = NoisyTopKRouter(dim, cfg)
        self.experts = GroupedExperts(cfg.num_experts, dim, cfg.hidden_dim(dim), cfg.expert_residual)
        for lin in (self.router.gate, self.router.noise):  # as every Linear in the reference
            if lin is not None:
                trunc_normal_(lin.weight, std=0.02)
                nn.init.zeros_(lin.bias)

    def forward(self, x_BND: torch.Tensor) -> tuple[torch.Tensor, MoEAux]:
        B, N, D = x_BND.shape
        E, K = self.num_experts, self.top_k
        x_TD = x_BND.reshape(B * N, D)
        weights_TK, experts_TK, probs_TE = self.router(x_TD)
        if self.capacity_factor is not None:
            capacity = int(B * N * K / E * self.capacity_factor)
            weights_TK = weights_TK * capacity_mask(experts_TK, E, capacity).to(weights_TK.dtype)

        if torch.onnx.is_in_onnx_export():  # exportable: every expert on every token, weighted by its gate
            gates_TE = torch.zeros_like(probs_TE).scatter(1, experts_TK, weights_TK.to(probs_TE.dtype))
            out_BND = self.experts.dense(x_TD, gates_TE).view(B, N, D)
            return out_BND.to(x_BND.dtype), MoEAux(gates_TE, torch.zeros((), dtype=probs_TE.dtype, device=x_BND.device))

        experts_S = experts_TK.reshape(-1)  # slot-major within each token
        order_S = torch.argsort(experts_S, stable=True)
        # scatter_add, not bincount: its output size is static (E), which torch.compile needs
        counts_E = torch.zeros(E, dtype=torch.int64, device=experts_S.device).scatter_add_(0, experts_S, torch.ones_like(experts_S))
        y_sorted_SD = self.experts(x_TD[order_S // K], counts_E)
        y_sorted_SD = y_sorted_SD * weights_TK.reshape(-1)[order_S, None].to(y_sorted_SD.dtype)
        # Undo the sort and sum the K slots of each token (deterministic, no atomics).
        y_SD = torch.empty_like(y_sorted_SD).index_copy_(0, order_S, y_sorted_SD)
        out_BND = y_SD.view(B * N, K, D).sum(dim=1).view(B, N, D)

        gates_TE = torch.zeros_like(probs_TE).scatter(1, experts_TK, weights_TK.to(probs_TE.dtype))
        routed_E = counts_E.to(probs_TE.dtype) / experts_S.numel()
        balance = self.balance_loss_weight * E * (routed_E * probs_TE.mean(dim=0)).sum()
        return out_BND.to(x_BND.dtype), MoEAux(gates_TE, balance)
