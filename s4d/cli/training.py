"""Training commands: ``s4d train`` (one fold), ``s4d cv`` (every fold, pooled; the same
options without ``--fold``) and ``s4d pretrain`` (MAE on a mixture). Their options are the
fields of ``TrainConfig`` / ``PretrainConfig`` (``from_config``), each also settable from
``--config FILE``."""

from __future__ import annotations

import inspect
from typing import Annotated

import typer

from ..train.config import PretrainConfig, TrainConfig
from .from_config import config_command
from .main import app, one_line_errors
from .options import pretrain_out, train_out

DRY_RUN = inspect.Parameter(
    "dry_run",
    inspect.Parameter.KEYWORD_ONLY,
    annotation=Annotated[bool, typer.Option("--dry-run", help="Print the run's estimated cost (steps, FLOPs, time) and exit without training.")],
    default=False,
)


@app.command("train")
@config_command(TrainConfig, train_out)
def train_cmd(cfg: TrainConfig) -> None:
    """Fine-tune on one fold (jointly with the still-image source); re-run to resume."""
    from ..train.finetune import train

    with one_line_errors():
        train(cfg, log=typer.echo)
    typer.echo(f"outputs in {cfg.out}")


@app.command("cv")
@config_command(TrainConfig, train_out, without=("fold",))
def cv_cmd(cfg: TrainConfig) -> None:
    """Train and test every fold (resumable), then pool all folds' predictions into one UAR/WAR."""
    from ..train.cv import cross_validate

    with one_line_errors():
        cross_validate(cfg, log=typer.echo)
    typer.echo(f"outputs in {cfg.out}")


@app.command("pretrain")
@config_command(PretrainConfig, pretrain_out, extra=(DRY_RUN,))
def pretrain_cmd(cfg: PretrainConfig, dry_run: bool = False) -> None:
    """Dual-modal MAE pre-training on videos and still images (re-run to resume)."""
    if dry_run:
        from ..train.cost import estimate_pretrain

        with one_line_errors():
            typer.echo(estimate_pretrain(cfg))
        return
    from ..train.pretrain import pretrain

    with one_line_errors():
        pretrain(cfg, log=typer.echo)
    typer.echo(f"outputs in {cfg.out} (encoder for fine-tuning: s4d train --init {cfg.out}/checkpoints/last.safetensors)")
