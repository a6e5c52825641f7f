"""Optimiser and schedule of S4D fine-tuning, built from timm: AdamW with layer-wise lr decay
(no weight decay on 1-D parameters, biases, q/v biases) and warm-up + cosine per step."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler


@dataclass(frozen=True)
class OptimConfig:
    base_lr: float = 4e-5  # at a global video batch of 32 (DESIGN §4); scaled linearly
    reference_batch: int = 32
    weight_decay: float = 0.05
    layer_decay: float = 0.75
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_epochs: float = 5
    min_lr: float = 1e-7
    warmup_lr: float = 1e-8

    def __post_init__(self) -> None:
        if self.base_lr <= 0 or self.reference_batch <= 0:
            raise ValueError("optim.base_lr and optim.reference_batch must be positive")
        if not 0 < self.layer_decay <= 1:
            raise ValueError(f"optim.layer_decay must be in (0, 1], got {self.layer_decay}")

    def lr(self, global_batch: int) -> float:
        return self.base_lr * global_batch / self.reference_batch


def build_optimizer(model: torch.nn.Module, cfg: OptimConfig, global_batch: int) -> torch.optim.Optimizer:
    return create_optimizer_v2(
        model, "adamw", lr=cfg.lr(global_batch), weight_decay=cfg.weight_decay, layer_decay=cfg.layer_decay, betas=cfg.betas
    )


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, epochs: int, steps_per_epoch: int) -> CosineLRScheduler:
    """Stepped per optimiser step with ``scheduler.step_update(step)``."""
    total = max(epochs * steps_per_epoch, 1)
    warmup = min(int(cfg.warmup_epochs * steps_per_epoch), total - 1)
    return CosineLRScheduler(  # warm-up first, then the cosine over the remaining steps
        optimizer, t_initial=total - warmup, lr_min=cfg.min_lr, warmup_t=warmup,
        warmup_lr_init=cfg.warmup_lr, warmup_prefix=True, t_in_epochs=False,
    )
