"""The typed, self-validating configs of ``s4d train``/``cv`` (``TrainConfig``) and ``s4d
pretrain`` (``PretrainConfig``); their defaults are the paper's recipe (DESIGN §4). A run pins
its config in ``config.json`` (``runtime.rundir``).

Each field is defined once, with its default and, in ``metadata`` (``opt``), its command-line
help and flag: ``s4d.cli.from_config`` builds the commands' options from them. Keys: ``help``;
``flags`` (declarations, default ``--<name>``); ``cli`` (parameter name when it differs);
``min``/``max``/``envvar``/``metavar``; ``path`` (typed as a path on the command line);
``cli_default`` (the command line's default when the field has none: ``out``, ``mixture``);
``nested`` (options mapped into a nested config: ``--lr`` -> ``optim.base_lr``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from preprocess.errors import InputError
from preprocess.mixture import MODALITIES as PRETRAIN_MODALITIES  # Table IV #2-#5

from ..models.config import SIZES, VARIANTS
from ..runtime.device import AMP_MODES
from .optim import OptimConfig
from .select import SELECT_METRICS, SELECT_MODES

MOAE_POSITIONS = ("early", "middle", "later", "alternate")

_EXPERT_FREE = ("vit", "vit-mtl")  # variants without experts: --experts/--top-k/--moae-* are refused


def opt(default: Any = dataclasses.MISSING, help: str = "", **cli: Any) -> Any:
    """A config field that is also a command-line option (see the module docstring)."""
    return field(default=default, metadata={"help": help, **cli})


# options both configs have, defined once (``shared(name)``: a fresh field each time)
_SHARED: dict[str, dict[str, Any]] = {
    "out": dict(help="Run folder (default runs/<manifest>[-<fold>]).", flags=("--out", "-o"), path=True, cli_default=None),
    "size": dict(default="base", help="debug | small | base"),
    "epochs": dict(default=100, help="Training epochs.", min=1),
    "data_root": dict(default=None, help="Where shards live (default ./data).", envvar="S4D_DATA", path=True),
    "seed": dict(default=0, help="Seed of sampling, augmentation and initialisation."),
    "backend": dict(default="auto", help="Loader: auto | dali | torch."),
    "device": dict(default="auto", help="auto (CUDA when present) | cpu | cuda[:N]"),
    "loader_threads": dict(
        default=None,
        help="DALI decoding threads per process (default: the CPU cores per rank on this node).",
        cli="threads",
        flags=("--threads",),
        min=1,
    ),
    "amp": dict(default="auto", help="Mixed precision: auto (bf16 on CUDA, fp32 on CPU) | bf16 | off."),
    "tensorboard": dict(
        default=True, help="TensorBoard event files in the run folder (tensorboard --logdir runs).", flags=("--tensorboard/--no-tensorboard",)
    ),
    "wandb": dict(default=None, help="Also log to this Weights & Biases project (WANDB_MODE=offline: no network).", metavar="PROJECT"),
}


def shared(name: str) -> Any:
    return opt(**_SHARED[name])


@dataclass(frozen=True)
class TrainConfig:
    manifest: str = opt(help="Video manifest name (in manifests/) or path (own data: DIR/manifest.json).", flags=("--manifest", "-m"))
    out: str = shared("out")
    fold: str | None = opt(None, "Fold name (default: the manifest's first).")
    variant: str = opt("s4d", "s4d | vit | vit-mtl | vit-moe")
    size: str = shared("size")
    epochs: int = shared("epochs")
    video_batch: int = opt(16, "Video clips per batch (per process).", min=1)
    image_batch: int = opt(32, "Still images per batch (per process).", min=1)
    sfer: bool = opt(True, "Joint training with the manifest's still-image source.", flags=("--sfer/--no-sfer",))
    proportion: float | None = opt(
        None,
        "Still-image batches per epoch, as a share of one pass over the images (default: the manifest's sfer.proportion).",
        flags=("--sfer-share",),
        min=0.0,
    )
    alpha: float | None = opt(
        None, "Loss weight A of video batches, 1 - A of image batches (default: weight 1 on both, as the reference).", min=0.0, max=1.0
    )
    experts: int = opt(8, "Experts per MoAE block (ViT-MoE: per FFN-expert block).", min=1)
    top_k: int = opt(2, "Experts each token is routed to (1..--experts).", min=1)
    moae_layers: int | None = opt(None, "Blocks with experts (default: half the depth).", min=1)
    moae_position: str = opt("later", "Where the expert blocks sit: early | middle | later | alternate (the paper's Table VIII).")
    mixup: float = opt(0.8, "Mixup alpha (0: off).", min=0.0)
    cutmix: float = opt(1.0, "CutMix alpha (0: off).", min=0.0)
    smoothing: float = opt(0.1, "Label smoothing.", min=0.0, max=1.0)
    augment: bool = opt(True, "Training augmentation (crops, flips, colour).", flags=("--augment/--no-augment",))
    init: str | None = opt(None, "Initialise the encoder from a checkpoint (ours, or the authors' pre-trained file).", path=True)
    data_root: str | None = shared("data_root")
    seed: int = shared("seed")
    backend: str = shared("backend")
    device: str = shared("device")
    loader_threads: int | None = shared("loader_threads")
    amp: str = shared("amp")
    accum: int = opt(1, "Batches accumulated per optimiser step (the lr scales with the effective batch).", min=1)
    compile: bool = opt(False, "torch.compile the model.", cli="compile_", flags=("--compile/--no-compile",))
    select: str = opt(
        "last",
        "Checkpoint reported beside the last epoch: last | val (best on a held-out part of the training fold) | test (the authors' "
        "protocol, best on the test split; labelled test-selected).",
    )
    val_fraction: float = opt(0.1, "--select val: share of the training fold held out (class-stratified, seeded).")
    select_metric: str = opt("uar", "--select val: uar | war (--select test always uses top-1, as the authors).")
    tensorboard: bool = shared("tensorboard")
    wandb: str | None = shared("wandb")
    optim: OptimConfig = field(
        default_factory=OptimConfig, metadata={"nested": {"lr": ("base_lr", "Peak lr at a video batch of 32 (scaled linearly with the batch).")}}
    )

    def __post_init__(self) -> None:
        if self.amp not in AMP_MODES:  # fp16 would need loss scaling; bf16 does not
            raise InputError(f"amp must be auto, bf16 or off, got {self.amp!r}")
        if self.epochs <= 0 or self.video_batch <= 0 or self.image_batch <= 0 or self.accum <= 0:
            raise InputError("epochs, video_batch, image_batch and accum must be positive")
        if self.alpha is not None and not 0.0 <= self.alpha <= 1.0:
            raise InputError(f"alpha must be in [0, 1], got {self.alpha}")
        if self.proportion is not None and not self.proportion >= 0.0:
            raise InputError(f"--sfer-share {self.proportion}: must be >= 0 (a share of one pass over the still images per epoch)")
        if self.select not in SELECT_MODES:
            raise InputError(f"select must be one of {', '.join(SELECT_MODES)}, got {self.select!r}")
        if not 0.0 < self.val_fraction < 1.0:
            raise InputError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.select_metric not in SELECT_METRICS:
            raise InputError(f"select_metric must be one of {', '.join(SELECT_METRICS)}, got {self.select_metric!r}")
        for name in ("mixup", "cutmix", "smoothing"):
            if not 0.0 <= getattr(self, name) or (name == "smoothing" and self.smoothing > 1.0):
                raise InputError(f"--{name} {getattr(self, name)}: must be >= 0" + (" and <= 1" if name == "smoothing" else ""))
        self._check_experts()
        _check_wandb(self.wandb)

    def _check_experts(self) -> None:
        """--experts/--top-k/--moae-layers/--moae-position: in range, and only for variants with experts."""
        if self.variant in _EXPERT_FREE:
            for name in ("experts", "top_k", "moae_layers", "moae_position"):
                if getattr(self, name) != _default(TrainConfig, name):
                    raise InputError(f"{_flag(name)} {getattr(self, name)}: variant {self.variant} has no experts (use s4d or vit-moe)")
        if self.experts < 1:
            raise InputError(f"--experts {self.experts}: must be >= 1")
        if not 1 <= self.top_k <= self.experts:
            raise InputError(f"--top-k {self.top_k}: must be in 1..--experts ({self.experts})")
        if self.moae_position not in MOAE_POSITIONS:
            raise InputError(f"--moae-position {self.moae_position}: must be one of {' | '.join(MOAE_POSITIONS)}")
        depth = SIZES[self.size].depth if self.size in SIZES and self.variant in VARIANTS else None
        if self.moae_layers is not None:
            if depth is not None and not 1 <= self.moae_layers <= depth:
                raise InputError(f"--moae-layers {self.moae_layers}: must be in 1..{depth} (the depth of size {self.size})")
            if self.moae_layers < 1:
                raise InputError(f"--moae-layers {self.moae_layers}: must be >= 1")
        count = self.moae_layers if self.moae_layers is not None else (depth or 0) // 2
        if depth is not None and self.moae_position == "alternate" and 2 * count - 1 > depth:
            raise InputError(f"--moae-position alternate: {count} expert blocks need a depth >= {2 * count - 1}, size {self.size} has {depth}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class PretrainConfig:
    mixture: str = opt(
        help="Pre-training mixture (default manifests/pretrain.json).", cli="manifest", flags=("--manifest", "-m"), cli_default="pretrain"
    )
    out: str = shared("out")
    size: str = shared("size")
    epochs: int = shared("epochs")
    video_batch: int = opt(48, "Video clips per step (per process), each seen as the mixture's views.", min=1)  # 48 x 4 views: 192 samples
    image_batch: int = opt(192, "Still images per step (per process).", min=1)
    modality: str = opt("both", "Pre-training data: both | images | videos | frames (single frames of the video shards as the still images).")
    image_share: float | None = opt(
        None,
        "Share of one pass of the still images used per epoch beside the video steps, 0..1 (Fig. 3c; default: the mixture's own shares).",
        min=0.0,
        max=1.0,
    )
    data_root: str | None = shared("data_root")
    seed: int = shared("seed")
    backend: str = shared("backend")
    device: str = shared("device")
    loader_threads: int | None = shared("loader_threads")
    amp: str = shared("amp")
    warmup_fraction: float = opt(0.05, "Warm-up as a share of all epochs (the reference's 5%).")
    tensorboard: bool = shared("tensorboard")
    wandb: str | None = shared("wandb")
    optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(
            base_lr=1.6e-3, reference_batch=512, weight_decay=0.05, layer_decay=1.0, betas=(0.9, 0.95), min_lr=0.0, warmup_lr=1e-6
        ),
        metadata={"nested": {"lr": ("base_lr", "Peak lr at 512 samples per step (scaled linearly; video samples = clips x views).")}},
    )

    def __post_init__(self) -> None:
        for name in ("epochs", "video_batch", "image_batch"):
            if getattr(self, name) <= 0:
                raise InputError(f"pretrain.{name} must be positive, got {getattr(self, name)}")
        if not 0 <= self.warmup_fraction < 1:
            raise InputError(f"pretrain.warmup_fraction must be in [0, 1), got {self.warmup_fraction}")
        if self.amp not in AMP_MODES:
            raise InputError(f"--amp {self.amp}: must be auto, bf16 or off")
        if self.modality not in PRETRAIN_MODALITIES:
            raise InputError(f"--modality {self.modality}: must be one of {' | '.join(PRETRAIN_MODALITIES)}")
        if self.image_share is not None and not 0.0 <= self.image_share <= 1.0:
            raise InputError(f"--image-share {self.image_share}: must be in 0..1")
        if self.image_share is not None and self.modality == "videos":
            raise InputError(f"--image-share {self.image_share}: --modality videos has no still images to share")
        _check_wandb(self.wandb)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _default(cls: type, name: str) -> Any:
    return cls.__dataclass_fields__[name].default


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _check_wandb(project: str | None) -> None:
    if project is not None and (not project.strip() or any(c in project for c in "/\\#?%:")):
        raise InputError(f"--wandb must be a W&B project name (no / \\ # ? % :), got {project!r}")
