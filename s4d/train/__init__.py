"""Training and evaluation: metrics, optimiser/schedule, the step loop, the test protocol, and
the runs behind ``s4d train`` / ``cv`` / ``eval`` / ``pretrain`` (``finetune``, ``evaluate``,
``pretrain`` modules; ``dist`` for torchrun/DDP)."""

from .loop import EpochStats, NonFiniteLoss, predict, train_epoch
from .metrics import clip_average, confusion, scores
from .optim import OptimConfig, build_mae_optimizer, build_optimizer, build_scheduler

__all__ = ["EpochStats", "NonFiniteLoss", "OptimConfig", "build_mae_optimizer", "build_optimizer", "build_scheduler", "clip_average", "confusion",
           "predict", "scores", "train_epoch"]
