"""The ViT trunk over tubelets and the S4D classifier on top of it.

Module names follow the reference checkpoints (``patch_embed.proj``, ``blocks.{i}.attn.qkv``,
``blocks.{i}.mlp.fc1``, ``fc_norm``, ``head.video``...), so most foreign keys load unchanged;
the rest is mapped in ``s4d.checkpoint.keymap``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from timm.layers import Mlp, trunc_normal_
from torch import nn

from .attention import Attention
from .block import Block
from .config import EncoderConfig, ModelConfig, MoEConfig
from .moe import MixtureOfExperts, MoEAux
from .patch_embed import TubeletEmbed
from .pos_embed import sinusoid_table


class ModelAux(NamedTuple):
    balance_loss: torch.Tensor  # scalar: sum over mixtures of weight x balance loss (0 if none)
    gates: tuple[torch.Tensor, ...]  # per mixture layer, (B, N, E) gate weights


class Transformer(nn.Module):
    """Patch embedding + fixed position table + blocks. ``embed`` then ``run_blocks``."""

    def __init__(self, enc: EncoderConfig, moae: MoEConfig | None = None, moe_ffn: MoEConfig | None = None) -> None:
        super().__init__()
        self.cfg = enc
        self.patch_embed = TubeletEmbed(enc.in_chans, enc.dim, enc.tubelet, enc.patch)
        # Fixed, not a parameter and not saved: rebuilt from the formula (DESIGN §4).
        self.register_buffer("pos_embed", sinusoid_table(enc.num_tokens, enc.dim), persistent=False)
        moae_blocks = set(moae.blocks) if moae else set()
        ffn_blocks = set(moe_ffn.blocks) if moe_ffn else set()
        hidden = int(enc.dim * enc.mlp_ratio)
        self.blocks = nn.ModuleList(
            Block(
                enc.dim,
                attn=Attention(enc.dim, enc.num_heads, enc.qkv_bias),
                mlp=MixtureOfExperts(enc.dim, moe_ffn) if i in ffn_blocks else Mlp(enc.dim, hidden, act_layer=nn.GELU),
                moae=MixtureOfExperts(enc.dim, moae) if i in moae_blocks else None,
                ln_eps=enc.ln_eps,
                drop_path=enc.drop_path * i / max(enc.depth - 1, 1),
            )
            for i in range(enc.depth)
        )
        # The reference's apply(_init_weights): every Linear (routers and experts included).
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B,3,T,H,W) or (B,3,H,W) -> (B, N, D) tokens with position added."""
        if x.shape[-2:] != (self.cfg.img_size, self.cfg.img_size):
            raise ValueError(f"input is {tuple(x.shape[-2:])} pixels; this model expects {self.cfg.img_size}x{self.cfg.img_size}")
        tokens_BND = self.patch_embed(x)
        n = tokens_BND.shape[1]
        if n > self.pos_embed.shape[0]:
            raise ValueError(
                f"input gives {n} tokens but the model is configured for {self.cfg.num_frames} frames ({self.pos_embed.shape[0]} tokens)"
            )
        return tokens_BND + self.pos_embed[:n].to(tokens_BND.dtype)

    def run_blocks(self, x_BND: torch.Tensor) -> tuple[torch.Tensor, list[MoEAux], torch.Tensor]:
        """Returns tokens, the aux of every mixture layer, and the weighted balance loss."""
        aux_all: list[MoEAux] = []
        balance = x_BND.new_zeros(())
        for block in self.blocks:
            x_BND, aux = block(x_BND)
            for a in aux:
                balance = balance + a.balance_loss
            aux_all.extend(aux)
        return x_BND, aux_all, balance


class Classifier(Transformer):
    """S4D fine-tuning model: mean of tokens -> ``fc_norm`` -> one Linear head per task.

    ``model(x, task)`` returns (B, classes[task]) logits for x of shape (B,3,T,H,W) or
    (B,3,H,W). Without ``task``, a video uses the ``video`` head and an image the ``image``
    head (or the only head there is).
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg.encoder, cfg.moae, cfg.moe_ffn)
        self.config = cfg
        dim = cfg.encoder.dim
        self.fc_norm = nn.LayerNorm(dim, eps=cfg.encoder.ln_eps)
        self.head_drop = nn.Dropout(cfg.head_dropout)
        self.head = nn.ModuleDict({task: nn.Linear(dim, n) for task, n in cfg.heads.items()})
        for lin in self.head.values():
            trunc_normal_(lin.weight, std=0.02)
            nn.init.zeros_(lin.bias)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        """Parameter groups by depth for timm's layer-wise lr decay: embedding, then each block
        (its MoAE included), then ``fc_norm`` and the heads."""
        # (100000,) is a group of its own after the last block (99999 would merge into block 11)
        return {"stem": r"^patch_embed", "blocks": [(r"^blocks\.(\d+)", None), (r"^fc_norm|^head", (100000,))]}

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return set()  # timm already exempts 1-D tensors (norms, biases, q/v biases)

    def resolve_task(self, x: torch.Tensor, task: str | None) -> str:
        if task is None:
            task = "video" if x.ndim == 5 else "image"
            if task not in self.head and len(self.head) == 1:
                task = next(iter(self.head))
        if task not in self.head:
            raise ValueError(f"no head for task {task!r}; this model has {sorted(self.head)}")
        return task

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[MoEAux], torch.Tensor]:
        """Pooled, normalised features (B, D), mixture aux, weighted balance loss."""
        tokens_BND, aux, balance = self.run_blocks(self.embed(x))
        return self.fc_norm(tokens_BND.mean(dim=1)), aux, balance

    def forward(self, x: torch.Tensor, task: str | None = None, return_aux: bool = False) -> torch.Tensor | tuple[torch.Tensor, ModelAux]:
        task = self.resolve_task(x, task)
        feats_BD, aux, balance = self.forward_features(x)
        logits = self.head[task](self.head_drop(feats_BD))
        if not return_aux:
            return logits
        B = x.shape[0]
        gates = tuple(a.gates_TE.view(B, -1, a.gates_TE.shape[-1]) for a in aux)
        return logits, ModelAux(balance, gates)
