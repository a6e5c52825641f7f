"""The options the commands share, typed once, and the one place that turns them into configs
and default output folders."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer

ManifestOpt = Annotated[str, typer.Option("--manifest", "-m", help="Video manifest name (in manifests/) or path (own data: DIR/manifest.json).")]
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
EpochsOpt = Annotated[int, typer.Option(min=1, help="Training epochs.")]
DataRootOpt = Annotated[Optional[Path], typer.Option("--data-root", envvar="S4D_DATA", help="Where shards live (default ./data).")]
SeedOpt = Annotated[int, typer.Option(help="Seed of sampling, augmentation and initialisation.")]
BackendOpt = Annotated[str, typer.Option(help="Loader: auto | dali | torch.")]
CheckpointOpt = Annotated[Path, typer.Option("--checkpoint", "-c", help="A fine-tuned checkpoint.")]
FoldOpt = Annotated[Optional[str], typer.Option(help="Fold whose test split to use (default: the first).")]
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


def train_config(**options: Any):
    """``TrainConfig`` from the options of ``s4d train`` / ``s4d cv``, named as on the command line
    (``threads``, ``compile_``, ``lr``, ``sfer_share``...); a missing one takes the field's default."""
    from ..train.config import TrainConfig
    from .from_config import config_from_options

    return config_from_options(TrainConfig, options, train_out)


def train_out(values: dict[str, Any]) -> Path:
    """``--out`` of ``s4d train``/``cv`` when not given (``values``: the config's fields)."""
    return default_out("train", values["manifest"], values.get("fold"))


def pretrain_out(values: dict[str, Any]) -> Path:
    """``--out`` of ``s4d pretrain`` when not given."""
    return default_out("pretrain", values["mixture"])


def without(command: Callable[..., Any], *names: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give the decorated ``f(**options)`` the options of ``command`` less ``names``: two commands
    that share their options declare them once."""
    signature = inspect.signature(command, eval_str=True)

    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        f.__signature__ = signature.replace(parameters=[p for n, p in signature.parameters.items() if n not in names])
        return f

    return decorate
