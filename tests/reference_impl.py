"""Slow, obviously-correct re-implementations of the reference model, written for the tests.

They read tensors by the authors' state-dict names (DESIGN §4) and follow the reference
code's computation literally: a Python loop to build the sinusoid table, materialised
softmax attention, and a per-expert loop that selects tokens with ``nonzero`` and
accumulates with ``index_add_`` (including the capacity rule that drops overflow tokens in
batch order). Nothing here is shared with the package under test.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def sinusoid_table_loop(n_position: int, d_hid: int) -> torch.Tensor:
    table = np.array([[pos / np.power(10000, 2 * (j // 2) / d_hid) for j in range(d_hid)] for pos in range(n_position)])
    table[:, 0::2] = np.sin(table[:, 0::2])
    table[:, 1::2] = np.cos(table[:, 1::2])
    return torch.tensor(table, dtype=torch.float32)


def linear(x, sd, name):
    return F.linear(x, sd[f"{name}.weight"], sd.get(f"{name}.bias"))


def layer_norm(x, sd, name, eps=1e-6):
    return F.layer_norm(x, x.shape[-1:], sd[f"{name}.weight"], sd[f"{name}.bias"], eps)


def attention(x, sd, name, num_heads):
    B, N, D = x.shape
    bias = torch.cat([sd[f"{name}.q_bias"], torch.zeros_like(sd[f"{name}.v_bias"]), sd[f"{name}.v_bias"]])
    qkv = F.linear(x, sd[f"{name}.qkv.weight"], bias).reshape(B, N, 3, num_heads, D // num_heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    attn = ((q * (D // num_heads) ** -0.5) @ k.transpose(-2, -1)).softmax(dim=-1)
    return linear((attn @ v).transpose(1, 2).reshape(B, N, D), sd, f"{name}.proj")


def mlp(x, sd, name):
    return linear(F.gelu(linear(x, sd, f"{name}.fc1")), sd, f"{name}.fc2")


def moe_layer(x, sd, name, top_k, capacity_factor=None, noise=None):
    """The reference sparse MoE: route, then loop over experts with nonzero/index_add_.
    ``noise`` (same shape as the logits) replaces ``randn_like`` when given."""
    B, N, D = x.shape
    logits = linear(x, sd, f"{name}.router.topkroute_linear")
    if noise is not None:
        logits = logits + noise * F.softplus(linear(x, sd, f"{name}.router.noise_linear"))
    top, idx = logits.topk(top_k, dim=-1)
    gating = torch.full_like(logits, float("-inf")).scatter(-1, idx, top).softmax(dim=-1)
    num_experts = logits.shape[-1]
    flat_x, flat_gate = x.reshape(-1, D), gating.reshape(-1, num_experts)
    capacity = int(B * N * top_k / num_experts * capacity_factor) if capacity_factor else None
    updates = torch.zeros_like(flat_x)
    for e in range(num_experts):
        selected = torch.nonzero((idx == e).any(dim=-1).reshape(-1)).squeeze(-1)
        if capacity is not None:
            selected = selected[:capacity]
        if selected.numel():
            out = mlp(flat_x[selected], sd, f"{name}.experts.{e}")
            updates.index_add_(0, selected, out * flat_gate[selected, e].unsqueeze(1))
    return updates.reshape(B, N, D)


def tokens(x, sd, prefix, table):
    if x.ndim == 4:
        x = x.unsqueeze(2).repeat(1, 1, 2, 1, 1)
    w = sd[f"{prefix}patch_embed.proj.weight"]
    t = F.conv3d(x, w, sd[f"{prefix}patch_embed.proj.bias"], stride=w.shape[2:]).flatten(2).transpose(1, 2)
    return t + table[: t.shape[1]]


def block(x, sd, name, num_heads, moe_kwargs=None):
    x = x + attention(layer_norm(x, sd, f"{name}.norm1"), sd, f"{name}.attn", num_heads)
    h = layer_norm(x, sd, f"{name}.norm2")
    y = mlp(h, sd, f"{name}.mlp")
    if f"{name}.moe_layer.router.topkroute_linear.weight" in sd:
        y = y + moe_layer(h, sd, f"{name}.moe_layer", **(moe_kwargs or {}))
    return x + y


def classifier_forward(sd, x, *, depth, num_heads, task, num_tokens, top_k=2, capacity_factor=None):
    table = sinusoid_table_loop(num_tokens, sd["patch_embed.proj.weight"].shape[0])
    h = tokens(x, sd, "", table)
    for i in range(depth):
        h = block(h, sd, f"blocks.{i}", num_heads, {"top_k": top_k, "capacity_factor": capacity_factor})
    return linear(layer_norm(h.mean(dim=1), sd, "fc_norm"), sd, f"head.{task}")


def normalised_patch_targets(pixels_BCTHW, tubelet, patch, eps=1e-6):
    """Per-patch, per-channel normalised pixels, one patch at a time."""
    B, C, T, H, W = pixels_BCTHW.shape
    rows = []
    for b in range(B):
        per_sample = []
        for t in range(0, T, tubelet):
            for i in range(0, H, patch):
                for j in range(0, W, patch):
                    p = pixels_BCTHW[b, :, t : t + tubelet, i : i + patch, j : j + patch]  # C, p0, p1, p2
                    p = p.reshape(C, -1).t()  # (p0 p1 p2), C
                    p = (p - p.mean(0)) / (p.var(0, unbiased=True) + eps) ** 0.5
                    per_sample.append(p.reshape(-1))
        rows.append(torch.stack(per_sample))
    return torch.stack(rows)


def num_params(*shapes) -> int:
    return sum(math.prod(s) for s in shapes)


def mae_forward(sd, x, visible_mask_BN, *, enc_heads, dec_heads, depth, dec_depth, num_tokens, pixel_mean, pixel_std, tubelet=2, patch=16, eps=1e-6):
    """The reference MAE step over reference-named tensors: boolean-mask the visible tokens,
    encode, put mask tokens back *in original token order*, decode all N tokens, predict the
    masked ones, MSE against per-patch normalised pixels. Returns (pred_BMP, loss)."""
    dim = sd["encoder.patch_embed.proj.weight"].shape[0]
    dec_dim = sd["encoder_to_decoder.weight"].shape[0]
    h = tokens(x, sd, "encoder.", sinusoid_table_loop(num_tokens, dim))
    B, N, _ = h.shape
    vis = h[visible_mask_BN].reshape(B, -1, dim)
    for i in range(depth):
        vis = block(vis, sd, f"encoder.blocks.{i}", enc_heads)
    vis = F.linear(layer_norm(vis, sd, "encoder.norm"), sd["encoder_to_decoder.weight"])
    full = sd["mask_token"].expand(B, N, dec_dim).clone()
    full[visible_mask_BN] = vis.reshape(-1, dec_dim)
    full = full + sinusoid_table_loop(num_tokens, dec_dim)[:N]
    for i in range(dec_depth):
        full = block(full, sd, f"decoder.blocks.{i}", dec_heads)
    pred = linear(layer_norm(full, sd, "decoder.norm"), sd, "decoder.head")[~visible_mask_BN].reshape(B, N - vis.shape[1], -1)
    video = x if x.ndim == 5 else x.unsqueeze(2).repeat(1, 1, tubelet, 1, 1)
    pixels = video * torch.tensor(pixel_std).view(1, 3, 1, 1, 1) + torch.tensor(pixel_mean).view(1, 3, 1, 1, 1)
    target = normalised_patch_targets(pixels, tubelet, patch, eps)[~visible_mask_BN].reshape(B, N - vis.shape[1], -1)
    return pred, F.mse_loss(pred, target)
