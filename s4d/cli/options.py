"""The options the commands share, typed once, and the one place that turns them into configs
and default output folders."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer

ManifestOpt = Annotated[str, typer.Option("--manifest", "-m", help="Video manifest name (in manifests/) or path (own data: DIR/manifest.json).")]
OutOpt = Annotated[Optional[Path], typer.Option("--out", "-o", help="Run folder (default runs/<manifest>[-<fold>]).")]
EvalOutOpt = Annotated[
    Optional[Path], typer.Option("--out", "-o", help="Folder for the outputs, not a training run's (default runs/eval-<manifest>-<fold>).")
]
AnalyzeOutOpt = Annotated[
    Optional[Path], typer.Option("--out", "-o", help="Folder for the PNG + JSON, not a training run's (default runs/analyze-<manifest>).")
]
ForceOpt = Annotated[
    bool,
    typer.Option(
        "--force", help="Replace this command's earlier outputs in --out (never a training run's files, never a file this command does not write)."
    ),
]
VariantOpt = Annotated[str, typer.Option(help="s4d | vit | vit-mtl | vit-moe")]
SizeOpt = Annotated[str, typer.Option(help="debug | small | base")]
EpochsOpt = Annotated[int, typer.Option(min=1, help="Training epochs.")]
VideoBatchOpt = Annotated[int, typer.Option(min=1, help="Video clips per batch (per process).")]
ImageBatchOpt = Annotated[int, typer.Option(min=1, help="Still images per batch (per process).")]
SferOpt = Annotated[bool, typer.Option("--sfer/--no-sfer", help="Joint training with the manifest's still-image source.")]
InitOpt = Annotated[Optional[Path], typer.Option(help="Initialise the encoder from a checkpoint (ours, or the authors' pre-trained file).")]
DataRootOpt = Annotated[Optional[Path], typer.Option("--data-root", envvar="S4D_DATA", help="Where shards live (default ./data).")]
SeedOpt = Annotated[int, typer.Option(help="Seed of sampling, augmentation and initialisation.")]
LrOpt = Annotated[float, typer.Option(help="Peak lr at a video batch of 32 (scaled linearly with the batch).")]
BackendOpt = Annotated[str, typer.Option(help="Loader: auto | dali | torch.")]
AmpOpt = Annotated[str, typer.Option(help="Mixed precision: auto (bf16 on CUDA, fp32 on CPU) | bf16 | off.")]
CompileOpt = Annotated[bool, typer.Option("--compile/--no-compile", help="torch.compile the model.")]
AccumOpt = Annotated[int, typer.Option(min=1, help="Batches accumulated per optimiser step (the lr scales with the effective batch).")]
AlphaOpt = Annotated[
    Optional[float],
    typer.Option(min=0.0, max=1.0, help="Loss weight A of video batches, 1 - A of image batches (default: weight 1 on both, as the reference)."),
]
SelectOpt = Annotated[
    str,
    typer.Option(
        help="Checkpoint reported beside the last epoch: last | val (best on a held-out part of the "
        "training fold) | test (the authors' protocol, best on the test split; labelled "
        "test-selected)."
    ),
]
ValFractionOpt = Annotated[float, typer.Option(help="--select val: share of the training fold held out (class-stratified, seeded).")]
ThreadsOpt = Annotated[Optional[int], typer.Option(min=1, help="DALI decoding threads per process (default: the CPU cores per rank on this node).")]
SelectMetricOpt = Annotated[str, typer.Option(help="--select val: uar | war (--select test always uses top-1, as the authors).")]
CheckpointOpt = Annotated[Path, typer.Option("--checkpoint", "-c", help="A fine-tuned checkpoint.")]
FoldOpt = Annotated[Optional[str], typer.Option(help="Fold whose test split to use (default: the first).")]
TensorboardOpt = Annotated[
    bool, typer.Option("--tensorboard/--no-tensorboard", help="TensorBoard event files in the run folder (tensorboard --logdir runs).")
]
WandbOpt = Annotated[
    Optional[str], typer.Option("--wandb", metavar="PROJECT", help="Also log to this Weights & Biases project (WANDB_MODE=offline: no network).")
]
DeviceOpt = Annotated[str, typer.Option(help="auto (CUDA when present) | cpu | cuda[:N]")]


def default_out(kind: str, manifest: str, fold: str | None = None) -> Path:
    """Where a command writes when ``--out`` is not given, as its ``--help`` says:
    ``runs/<manifest>[-<fold>]`` for a training run, ``runs/eval-<manifest>-<fold>`` for an
    evaluation (``fold``: the fold it scores, resolved by the caller: the manifest's first when
    ``--fold`` is not given), ``runs/<kind>-<manifest>`` for pre-training and analyses.
    ``<manifest>``: its name, or for own data the folder name of DIR/manifest.json."""
    path = Path(manifest)
    name = path.parent.name if path.name == "manifest.json" else path.stem
    if kind == "train":
        return Path("runs") / (name if fold is None else f"{name}-{fold}")
    if kind == "eval":
        if fold is None:
            raise ValueError("default_out('eval'): the caller resolves the fold")  # internal invariant
        return Path("runs") / f"eval-{name}-{fold}"
    return Path("runs") / f"{kind}-{name}"


def train_config(
    *,
    manifest: str,
    out: Path | None,
    fold: str | None,
    variant: str,
    size: str,
    epochs: int,
    video_batch: int,
    image_batch: int,
    sfer: bool,
    init: Path | None,
    data_root: Path | None,
    seed: int,
    lr: float,
    backend: str,
    amp: str,
    compile_: bool,
    accum: int,
    alpha: float | None,
    select: str,
    val_fraction: float,
    select_metric: str,
    threads: int | None,
    tensorboard: bool,
    wandb: str | None,
):
    """``TrainConfig`` from the options of ``s4d train`` / ``s4d cv`` (named as on the command line)."""
    from ..train.config import TrainConfig
    from ..train.optim import OptimConfig

    return TrainConfig(
        manifest=manifest,
        out=str(out or default_out("train", manifest, fold)),
        fold=fold,
        variant=variant,
        size=size,
        epochs=epochs,
        video_batch=video_batch,
        image_batch=image_batch,
        sfer=sfer,
        init=str(init) if init else None,
        data_root=str(data_root) if data_root else None,
        seed=seed,
        backend=backend,
        amp=amp,
        compile=compile_,
        accum=accum,
        alpha=alpha,
        select=select,
        val_fraction=val_fraction,
        select_metric=select_metric,
        loader_threads=threads,
        tensorboard=tensorboard,
        wandb=wandb,
        optim=OptimConfig(base_lr=lr),
    )


def without(command: Callable[..., Any], *names: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give the decorated ``f(**options)`` the options of ``command`` less ``names``: two commands
    that share their options declare them once."""
    signature = inspect.signature(command, eval_str=True)

    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        f.__signature__ = signature.replace(parameters=[p for n, p in signature.parameters.items() if n not in names])
        return f

    return decorate
