"""Model configs from tensor shapes, for files that carry none (the authors' and VideoMAE-style
checkpoints). What weights do not store (heads, image size, frames) comes from arguments, with
S4D's defaults."""

from __future__ import annotations

import re
from typing import Any

import torch

from ..models.config import EncoderConfig, MAEConfig, ModelConfig, MoEConfig, moe_block_indices
from .keymap import CheckpointError


def _block_ids(keys: list[str], prefix: str = "") -> list[int]:
    pat = re.compile(rf"^{re.escape(prefix)}blocks\.(\d+)\.")
    return sorted({int(m[1]) for k in keys if (m := pat.match(k))})


def infer_encoder_config(
    tensors: dict[str, torch.Tensor],
    prefix: str = "",
    *,
    num_heads: int | None = None,
    img_size: int | None = None,
    num_frames: int | None = None,
) -> EncoderConfig:
    """Rebuild the encoder shape from its tensors. Heads, image size and frame count are not
    stored in weights: ``num_heads`` defaults to dim // 64 (ViT convention), the rest to S4D's
    160 px, 16 frames."""
    try:
        proj = tensors[f"{prefix}patch_embed.proj.weight"]
    except KeyError:
        raise CheckpointError(f"no {prefix}patch_embed.proj.weight: not a ViT checkpoint this project knows") from None
    dim, in_chans, tubelet, patch, _ = proj.shape
    blocks = _block_ids(list(tensors), prefix)
    holes = sorted(set(range(max(blocks, default=-1) + 1)) - set(blocks))
    if holes:
        raise CheckpointError(f"no tensors for {prefix}blocks {holes} (blocks 0..{max(blocks)} expected)")
    fc1 = next((tensors[k] for i in blocks if (k := f"{prefix}blocks.{i}.mlp.fc1.weight") in tensors), None)
    return EncoderConfig(
        img_size=img_size or 160,
        num_frames=num_frames or 16,
        tubelet=tubelet,
        patch=patch,
        in_chans=in_chans,
        dim=dim,
        depth=max(blocks) + 1 if blocks else 0,
        num_heads=num_heads or max(dim // 64, 1),
        mlp_ratio=fc1.shape[0] / dim if fc1 is not None else 4.0,
        qkv_bias=f"{prefix}blocks.{blocks[0]}.attn.q_bias" in tensors if blocks else True,
    )


def _infer_moe(tensors: dict[str, torch.Tensor], where: str, dim: int, top_k: int) -> MoEConfig | None:
    blocks = sorted(int(m[1]) for k in tensors if (m := re.match(rf"^blocks\.(\d+)\.{where}\.experts\.w1$", k)))
    if not blocks:
        return None
    w1 = tensors[f"blocks.{blocks[0]}.{where}.experts.w1"]
    has_noise = f"blocks.{blocks[0]}.{where}.router.noise.weight" in tensors
    return MoEConfig(
        blocks=tuple(blocks),
        num_experts=w1.shape[0],
        top_k=min(top_k, w1.shape[0]),
        hidden_ratio=w1.shape[2] / dim,
        noise="learned" if has_noise else "none",
    )


def infer_model_config(tensors: dict[str, torch.Tensor], *, top_k: int = 2, **encoder_opts: Any) -> ModelConfig:
    enc = infer_encoder_config(tensors, **encoder_opts)
    heads = {m[1]: tensors[k].shape[0] for k in tensors if (m := re.match(r"^head\.(\w+)\.weight$", k))}
    return ModelConfig(
        encoder=enc,
        heads=heads or {"video": 7, "image": 7},
        moae=_infer_moe(tensors, "moae", enc.dim, top_k),
        moe_ffn=_infer_moe(tensors, "mlp", enc.dim, top_k),
    )


def infer_mae_config(tensors: dict[str, torch.Tensor], **encoder_opts: Any) -> MAEConfig:
    enc = infer_encoder_config(tensors, "encoder.", **encoder_opts)
    try:
        decoder_dim = tensors["encoder_to_decoder.weight"].shape[0]
    except KeyError:
        raise CheckpointError("pre-training checkpoint has no encoder_to_decoder.weight") from None
    return MAEConfig(
        encoder=enc,
        decoder_dim=decoder_dim,
        decoder_depth=len(_block_ids(list(tensors), "decoder.")),
        decoder_heads=max(decoder_dim // 64, 1),
    )


def default_classifier_config(enc: EncoderConfig, top_k: int = 2) -> ModelConfig:
    """S4D on a given encoder: both heads, MoAE in the later half (for fine-tuning from a
    pre-trained encoder)."""
    return ModelConfig(encoder=enc, moae=MoEConfig(blocks=moe_block_indices(enc.depth, max(enc.depth // 2, 1)), top_k=top_k))
