"""The typed, self-validating configs of ``s4d train``/``cv`` (``TrainConfig``) and ``s4d
pretrain`` (``PretrainConfig``); their defaults are the paper's recipe (DESIGN §4). A run pins
its config in ``config.json`` (``runtime.rundir``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from preprocess.errors import InputError

from ..runtime.device import AMP_MODES
from .optim import OptimConfig
from .select import SELECT_METRICS, SELECT_MODES


@dataclass(frozen=True)
class TrainConfig:
    manifest: str
    out: str
    fold: str | None = None
    variant: str = "s4d"
    size: str = "base"
    epochs: int = 100
    video_batch: int = 16
    image_batch: int = 32
    sfer: bool = True
    proportion: float | None = None  # default: the manifest's sfer.proportion
    alpha: float | None = None  # None: weight 1 on both tasks (reference); A: video batches A, image batches 1 - A
    mixup: float = 0.8
    cutmix: float = 1.0
    smoothing: float = 0.1
    augment: bool = True
    init: str | None = None
    data_root: str | None = None
    seed: int = 0
    backend: str = "auto"
    device: str = "auto"
    loader_threads: int | None = None  # DALI threads per process; None: the cores per rank
    amp: str = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU | bf16 | off
    accum: int = 1  # batches accumulated per optimiser step
    compile: bool = False
    select: str = "last"  # which checkpoint is reported besides the last: last | val | test (see ``select``)
    val_fraction: float = 0.1  # select=val: share of the training fold held out (stratified, seeded)
    select_metric: str = "uar"  # select=val: uar | war (select=test always uses top-1, as the authors)
    tensorboard: bool = True  # event files in <out>/tensorboard (runtime.tracking)
    wandb: str | None = None  # W&B project; WANDB_MODE=offline works without a network
    optim: OptimConfig = field(default_factory=OptimConfig)

    def __post_init__(self) -> None:
        if self.amp not in AMP_MODES:  # fp16 would need loss scaling; bf16 does not
            raise InputError(f"amp must be auto, bf16 or off, got {self.amp!r}")
        if self.epochs <= 0 or self.video_batch <= 0 or self.image_batch <= 0 or self.accum <= 0:
            raise InputError("epochs, video_batch, image_batch and accum must be positive")
        if self.alpha is not None and not 0.0 <= self.alpha <= 1.0:
            raise InputError(f"alpha must be in [0, 1], got {self.alpha}")
        if self.select not in SELECT_MODES:
            raise InputError(f"select must be one of {', '.join(SELECT_MODES)}, got {self.select!r}")
        if not 0.0 < self.val_fraction < 1.0:
            raise InputError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.select_metric not in SELECT_METRICS:
            raise InputError(f"select_metric must be one of {', '.join(SELECT_METRICS)}, got {self.select_metric!r}")
        _check_wandb(self.wandb)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class PretrainConfig:
    mixture: str
    out: str
    size: str = "base"
    epochs: int = 100
    video_batch: int = 48  # clips per step and process (each seen as ``repeat`` views: 192 samples)
    image_batch: int = 192  # images per step and process
    data_root: str | None = None
    seed: int = 0
    backend: str = "auto"
    device: str = "auto"
    loader_threads: int | None = None  # DALI threads per process; None: the cores per rank
    amp: str = "auto"
    warmup_fraction: float = 0.05  # of all epochs (the reference's 5%)
    tensorboard: bool = True  # event files in <out>/tensorboard (runtime.tracking)
    wandb: str | None = None  # W&B project; WANDB_MODE=offline works without a network
    optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(
            base_lr=1.6e-3, reference_batch=512, weight_decay=0.05, layer_decay=1.0, betas=(0.9, 0.95), min_lr=0.0, warmup_lr=1e-6
        )
    )

    def __post_init__(self) -> None:
        for name in ("epochs", "video_batch", "image_batch"):
            if getattr(self, name) <= 0:
                raise InputError(f"pretrain.{name} must be positive, got {getattr(self, name)}")
        if not 0 <= self.warmup_fraction < 1:
            raise InputError(f"pretrain.warmup_fraction must be in [0, 1), got {self.warmup_fraction}")
        _check_wandb(self.wandb)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _check_wandb(project: str | None) -> None:
    if project is not None and (not project.strip() or any(c in project for c in "/\\#?%:")):
        raise InputError(f"--wandb must be a W&B project name (no / \\ # ? % :), got {project!r}")
