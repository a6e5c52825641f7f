"""Training and evaluation: metrics, optimiser/schedule, the step loop and the test protocol.

Work in progress (issue 5): the ``s4d train/eval/cv/pretrain`` commands, checkpointing with
resume, and DDP are not built yet.
"""

from .loop import EpochStats, NonFiniteLoss, predict, train_epoch
from .metrics import clip_average, confusion, scores
from .optim import OptimConfig, build_optimizer, build_scheduler

__all__ = ["EpochStats", "NonFiniteLoss", "OptimConfig", "build_optimizer", "build_scheduler", "clip_average", "confusion",
           "predict", "scores", "train_epoch"]
