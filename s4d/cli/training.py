"""Training commands: ``s4d train`` (one fold), ``s4d cv`` (every fold, pooled; the same
options without ``--fold``) and ``s4d pretrain`` (MAE on a mixture)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from .main import app, one_line_errors
from .options import (
    AccumOpt,
    AlphaOpt,
    AmpOpt,
    BackendOpt,
    CompileOpt,
    DataRootOpt,
    EpochsOpt,
    ImageBatchOpt,
    InitOpt,
    LrOpt,
    ManifestOpt,
    OutOpt,
    SeedOpt,
    SelectMetricOpt,
    SelectOpt,
    SferOpt,
    SizeOpt,
    TensorboardOpt,
    ThreadsOpt,
    ValFractionOpt,
    VariantOpt,
    VideoBatchOpt,
    WandbOpt,
    default_out,
    train_config,
    without,
)


@app.command("train")
def train_cmd(
    manifest: ManifestOpt,
    out: OutOpt = None,
    fold: Annotated[Optional[str], typer.Option(help="Fold name (default: the manifest's first).")] = None,
    variant: VariantOpt = "s4d",
    size: SizeOpt = "base",
    epochs: EpochsOpt = 100,
    video_batch: VideoBatchOpt = 16,
    image_batch: ImageBatchOpt = 32,
    sfer: SferOpt = True,
    init: InitOpt = None,
    data_root: DataRootOpt = None,
    seed: SeedOpt = 0,
    lr: LrOpt = 4e-5,
    backend: BackendOpt = "auto",
    amp: AmpOpt = "auto",
    compile_: CompileOpt = False,
    accum: AccumOpt = 1,
    alpha: AlphaOpt = None,
    select: SelectOpt = "last",
    val_fraction: ValFractionOpt = 0.1,
    select_metric: SelectMetricOpt = "uar",
    threads: ThreadsOpt = None,
    tensorboard: TensorboardOpt = True,
    wandb: WandbOpt = None,
) -> None:
    """Fine-tune on one fold (jointly with the still-image source); re-run to resume."""
    options = dict(locals())  # every option, by name
    from ..train.finetune import train

    with one_line_errors():
        cfg = train_config(**options)
        train(cfg, log=typer.echo)
    typer.echo(f"outputs in {cfg.out}")


@app.command("cv")
@without(train_cmd, "fold")
def cv_cmd(**options) -> None:
    """Train and test every fold (resumable), then pool all folds' predictions into one UAR/WAR."""
    from ..train.cv import cross_validate

    with one_line_errors():
        cfg = train_config(fold=None, **options)
        cross_validate(cfg, log=typer.echo)
    typer.echo(f"outputs in {cfg.out}")


@app.command("pretrain")
def pretrain_cmd(
    manifest: Annotated[str, typer.Option("--manifest", "-m", help="Pre-training mixture (default manifests/pretrain.json).")] = "pretrain",
    out: OutOpt = None,
    size: SizeOpt = "base",
    epochs: EpochsOpt = 100,
    video_batch: Annotated[int, typer.Option(min=1, help="Video clips per step (per process), each seen as the mixture's views.")] = 48,
    image_batch: ImageBatchOpt = 192,
    data_root: DataRootOpt = None,
    seed: SeedOpt = 0,
    lr: Annotated[float, typer.Option(help="Peak lr at 512 samples per step (scaled linearly; video samples = clips x views).")] = 1.6e-3,
    backend: BackendOpt = "auto",
    threads: ThreadsOpt = None,
    tensorboard: TensorboardOpt = True,
    wandb: WandbOpt = None,
) -> None:
    """Dual-modal MAE pre-training on videos and still images (re-run to resume)."""
    import dataclasses

    from ..train.config import PretrainConfig
    from ..train.pretrain import pretrain

    with one_line_errors():
        cfg = PretrainConfig(
            mixture=manifest,
            out=str(out or default_out("pretrain", manifest)),
            size=size,
            epochs=epochs,
            video_batch=video_batch,
            image_batch=image_batch,
            data_root=str(data_root) if data_root else None,
            seed=seed,
            backend=backend,
            loader_threads=threads,
            tensorboard=tensorboard,
            wandb=wandb,
        )
        cfg = dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, base_lr=lr))
        pretrain(cfg, log=typer.echo)
    typer.echo(f"outputs in {cfg.out} (encoder for fine-tuning: s4d train --init {cfg.out}/checkpoints/last.safetensors)")
