"""Dual-modal masked autoencoder for pre-training (videos and images, one encoder).

Names follow the reference pre-training checkpoint: ``encoder.*`` (with ``encoder.norm``),
``encoder_to_decoder``, ``mask_token``, ``decoder.blocks.*``, ``decoder.norm``, ``decoder.head``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from timm.layers import Mlp, trunc_normal_
from torch import nn

from .attention import Attention
from .block import Block
from .config import EncoderConfig, MAEConfig
from .pos_embed import sinusoid_table
from .vit import Transformer


class Masks(NamedTuple):
    visible_BV: torch.Tensor  # int64 token indices, ascending per row
    masked_BM: torch.Tensor  # int64 token indices, ascending per row


class MAEOutput(NamedTuple):
    loss: torch.Tensor  # scalar MSE over masked patches
    pred_BMP: torch.Tensor  # predicted patches, P = tubelet * patch * patch * 3
    target_BMP: torch.Tensor  # normalised pixel targets of the masked patches
    masks: Masks


def random_masking(batch: int, num_tokens: int, mask_ratio: float, generator: torch.Generator | None = None, device=None) -> Masks:
    """Independent random (not tube) masking per sample: ``int(mask_ratio * N)`` tokens are
    masked, the rest visible (800 tokens at 0.95 -> 40 visible; 100 at 0.90 -> 10)."""
    num_masked = int(mask_ratio * num_tokens)
    noise_BN = torch.rand(batch, num_tokens, generator=generator, device=generator.device if generator else device)
    ids_BN = noise_BN.argsort(dim=1).to(device)
    visible = ids_BN[:, : num_tokens - num_masked].sort(dim=1).values
    masked = ids_BN[:, num_tokens - num_masked :].sort(dim=1).values
    return Masks(visible, masked)


def patchify(video_BCTHW: torch.Tensor, tubelet: int, patch: int) -> torch.Tensor:
    """(B, C, T, H, W) -> (B, N, tubelet*patch*patch, C), tokens in (t, h, w) order and pixels
    in (p0, p1, p2) order, the layout of the reference decoder head."""
    B, C, T, H, W = video_BCTHW.shape
    t, h, w = T // tubelet, H // patch, W // patch
    x = video_BCTHW.reshape(B, C, t, tubelet, h, patch, w, patch)
    x = x.permute(0, 2, 4, 6, 3, 5, 7, 1)
    return x.reshape(B, t * h * w, tubelet * patch * patch, C)


def gather_tokens(x_BND: torch.Tensor, idx_BK: torch.Tensor) -> torch.Tensor:
    return torch.gather(x_BND, 1, idx_BK[..., None].expand(-1, -1, x_BND.shape[-1]))


class MAEDecoder(nn.Module):
    def __init__(self, dim: int, depth: int, heads: int, out_dim: int, ln_eps: float) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            Block(dim, attn=Attention(dim, heads), mlp=Mlp(dim, 4 * dim, act_layer=nn.GELU), ln_eps=ln_eps) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim, eps=ln_eps)
        self.head = nn.Linear(dim, out_dim)

    def forward(self, x_BND: torch.Tensor, num_out: int) -> torch.Tensor:
        for block in self.blocks:
            x_BND, _ = block(x_BND)
        return self.head(self.norm(x_BND[:, -num_out:]))


class MAEEncoder(Transformer):
    def __init__(self, enc: EncoderConfig) -> None:
        super().__init__(enc)
        self.norm = nn.LayerNorm(enc.dim, eps=enc.ln_eps)


class PretrainMAE(nn.Module):
    """``model(x, generator=...)`` masks, encodes visible tokens, reconstructs the masked
    ones and returns the loss. x is (B,3,T,H,W) video or (B,3,H,W) image, normalised with
    ``pixel_mean``/``pixel_std``; the mask ratio follows the modality."""

    def __init__(self, cfg: MAEConfig) -> None:
        super().__init__()
        self.config = cfg
        enc = cfg.encoder
        self.encoder = MAEEncoder(enc)
        self.encoder_to_decoder = nn.Linear(enc.dim, cfg.decoder_dim, bias=False)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, cfg.decoder_dim))
        self.decoder = MAEDecoder(cfg.decoder_dim, cfg.decoder_depth, cfg.decoder_heads, enc.patch_pixels, enc.ln_eps)
        self.register_buffer("decoder_pos_embed", sinusoid_table(enc.num_tokens, cfg.decoder_dim), persistent=False)
        self.register_buffer("pixel_mean", torch.tensor(cfg.pixel_mean).view(1, 3, 1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(cfg.pixel_std).view(1, 3, 1, 1, 1), persistent=False)
        for sub in (self.encoder_to_decoder, *self.decoder.modules()):
            if isinstance(sub, nn.Linear):
                trunc_normal_(sub.weight, std=0.02)
                if sub.bias is not None:
                    nn.init.zeros_(sub.bias)
        trunc_normal_(self.mask_token, std=0.02)

    def as_video(self, x: torch.Tensor) -> torch.Tensor:
        """An image becomes a clip of ``tubelet`` identical frames."""
        return x.unsqueeze(2).expand(-1, -1, self.config.encoder.tubelet, -1, -1) if x.ndim == 4 else x

    def targets(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, P) targets: per patch and channel, pixels in [0, 1] normalised to zero mean and
        unit variance: ``(x - mean) / sqrt(var + eps)`` with the unbiased variance, as the S4D
        reference pre-training loss does (VideoMAE adds eps to the std instead)."""
        enc = self.config.encoder
        pixels = self.as_video(x) * self.pixel_std + self.pixel_mean
        patches_BNPC = patchify(pixels.float(), enc.tubelet, enc.patch)
        if self.config.norm_target:
            mean = patches_BNPC.mean(dim=-2, keepdim=True)
            var = patches_BNPC.var(dim=-2, unbiased=True, keepdim=True)
            patches_BNPC = (patches_BNPC - mean) / (var + self.config.target_eps).sqrt()
        return patches_BNPC.flatten(2)

    def mask_for(self, x: torch.Tensor, generator: torch.Generator | None = None) -> Masks:
        enc = self.config.encoder
        frames = x.shape[2] if x.ndim == 5 else enc.tubelet
        num_tokens = frames // enc.tubelet * enc.tokens_per_frame_pair
        ratio = self.config.mask_ratio_video if x.ndim == 5 else self.config.mask_ratio_image
        return random_masking(x.shape[0], num_tokens, ratio, generator, x.device)

    def forward(self, x: torch.Tensor, masks: Masks | None = None, generator: torch.Generator | None = None) -> MAEOutput:
        if masks is None:
            masks = self.mask_for(x, generator)
        tokens_BND = self.encoder.embed(x)
        visible_BVD = gather_tokens(tokens_BND, masks.visible_BV)
        encoded_BVD, _, _ = self.encoder.run_blocks(visible_BVD)
        latent_BVd = self.encoder_to_decoder(self.encoder.norm(encoded_BVD))

        pos_Nd = self.decoder_pos_embed[: tokens_BND.shape[1]].to(latent_BVd.dtype)
        pos_BNd = pos_Nd.expand(x.shape[0], -1, -1)
        M = masks.masked_BM.shape[1]
        full_BNd = torch.cat(
            (
                latent_BVd + gather_tokens(pos_BNd, masks.visible_BV),
                self.mask_token.to(latent_BVd.dtype) + gather_tokens(pos_BNd, masks.masked_BM),
            ),
            dim=1,
        )
        pred_BMP = self.decoder(full_BNd, M)
        target_BMP = gather_tokens(self.targets(x), masks.masked_BM)
        loss = F.mse_loss(pred_BMP.float(), target_BMP)
        return MAEOutput(loss, pred_BMP, target_BMP, masks)
