"""Training: typed configs (``config``), optimiser and schedule (``optim``), the one step loop of
fine-tuning and MAE (``loop``), the epoch driver (``epochs``), model selection (``select``), and
the runs behind ``s4d train`` (``finetune``, tested by ``report``), ``cv`` and ``pretrain``."""

from .loop import EpochStats, NonFiniteLoss, classification_loss, mae_loss, train_epoch
from .optim import OptimConfig, build_mae_optimizer, build_optimizer, build_scheduler

__all__ = [
    "EpochStats",
    "NonFiniteLoss",
    "OptimConfig",
    "build_mae_optimizer",
    "build_optimizer",
    "build_scheduler",
    "classification_loss",
    "mae_loss",
    "train_epoch",
]
