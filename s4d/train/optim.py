"""Optimisers and schedules of S4D, as the reference code sets them up.

Fine-tuning: AdamW (0.9, 0.999), weight decay 0.05 except on 1-D parameters, biases (``*.bias``
and the stacked expert biases ``experts.b1``/``b2``, which are 2-D) and ``pos_embed``;
layer-wise lr decay 0.75 (timm's BEiT rule); peak lr 4e-5 at a global video batch of 32,
scaled linearly, with the cosine's floor scaled alike (the reference's ``min_lr 1e-6 x
batch/256`` = 1.25e-7 at 32); 5 warm-up epochs from 0; stepped per optimiser step.

MAE pre-training (``mae_param_groups``): AdamW (0.9, 0.95), weight decay 0.05 except on biases
and LayerNorm parameters; ``q_bias``, ``v_bias`` and ``mask_token`` are decayed (the reference
excludes by the name pattern ``*.bias`` and the module class ``LayerNorm`` only).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from timm.optim import param_groups_layer_decay
from timm.scheduler import CosineLRScheduler

from preprocess.errors import InputError

_EXPERT_BIAS = re.compile(r"(^|\.)experts\.b\d+$")  # stacked (E, H) / (E, D) biases of MoAE / MoE experts


@dataclass(frozen=True)
class OptimConfig:
    base_lr: float = 4e-5  # at a global batch of ``reference_batch`` (DESIGN §4); scaled linearly
    reference_batch: int = 32
    weight_decay: float = 0.05
    layer_decay: float = 0.75
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_epochs: float = 5
    min_lr: float = 1.25e-7  # cosine floor at ``reference_batch``; scaled with the batch like base_lr
    warmup_lr: float = 0.0  # lr of the first warm-up step (not scaled)

    def __post_init__(self) -> None:
        if self.base_lr <= 0 or self.reference_batch <= 0:
            raise InputError("optim.base_lr and optim.reference_batch must be positive")
        if not 0 < self.layer_decay <= 1:
            raise InputError(f"optim.layer_decay must be in (0, 1], got {self.layer_decay}")
        for name in ("weight_decay", "warmup_epochs", "min_lr", "warmup_lr"):
            if getattr(self, name) < 0:
                raise InputError(f"optim.{name} must be >= 0, got {getattr(self, name)}")

    def lr(self, global_batch: int) -> float:
        return self.base_lr * global_batch / self.reference_batch

    def floor(self, global_batch: int) -> float:
        return self.min_lr * global_batch / self.reference_batch


def is_bias(name: str) -> bool:
    """``*.bias`` or a stacked expert bias (``experts.b1``, ``experts.b2``)."""
    return name.endswith(".bias") or name == "bias" or bool(_EXPERT_BIAS.search(name))


def no_decay_names(model: torch.nn.Module) -> list[str]:
    """Fine-tuning parameters without weight decay: 1-D, biases, ``pos_embed``."""
    return [n for n, p in model.named_parameters() if p.ndim <= 1 or is_bias(n) or n.rsplit(".", 1)[-1] == "pos_embed"]


def build_optimizer(model: torch.nn.Module, cfg: OptimConfig, global_batch: int) -> torch.optim.AdamW:
    groups = param_groups_layer_decay(model, weight_decay=cfg.weight_decay, no_weight_decay_list=no_decay_names(model), layer_decay=cfg.layer_decay)
    return torch.optim.AdamW(groups, lr=cfg.lr(global_batch), betas=cfg.betas)


def mae_param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: decayed, and biases + LayerNorm parameters (no decay)."""
    norms = {
        f"{m}.{n}" if m else n
        for m, mod in model.named_modules()
        if isinstance(mod, torch.nn.LayerNorm)
        for n, _ in mod.named_parameters(recurse=False)
    }
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if is_bias(name) or name in norms else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_mae_optimizer(model: torch.nn.Module, cfg: OptimConfig, global_batch: int) -> torch.optim.AdamW:
    return torch.optim.AdamW(mae_param_groups(model, cfg.weight_decay), lr=cfg.lr(global_batch), betas=cfg.betas)


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: OptimConfig, epochs: int, steps_per_epoch: int, global_batch: int | None = None
) -> CosineLRScheduler:
    """Warm-up from ``warmup_lr``, then cosine to ``min_lr`` (scaled by ``global_batch`` when
    given), stepped per optimiser step with ``scheduler.step_update(step)``. The groups hold
    the step-0 lr (with their layer scales) from the start."""
    total = max(epochs * steps_per_epoch, 1)
    warmup = min(int(cfg.warmup_epochs * steps_per_epoch), total - 1)
    floor = cfg.floor(global_batch) if global_batch is not None else cfg.min_lr
    sched = CosineLRScheduler(  # warm-up first, then the cosine over the remaining steps
        optimizer,
        t_initial=total - warmup,
        lr_min=floor,
        warmup_t=warmup,
        warmup_lr_init=cfg.warmup_lr,
        warmup_prefix=True,
        t_in_epochs=False,
    )
    sched.step_update(0)
    return sched
