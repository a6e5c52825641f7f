"""A recipe's rows as the exact ``s4d`` commands they run: the row's own flags plus the shared
ones filled from the user's options (``RunOptions``), and the folders they write:
``<out>/<recipe>/<row>/seed_<s>/`` (the fine-tuning run, whose ``summary.json`` marks the row
done) and, for a row that pre-trains, ``<out>/<recipe>/<row>/pretrain_seed_<s>/`` beside it
(one pre-training per seed, so every (row, seed) unit is independent: a SLURM array task runs
whole units)."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from preprocess.errors import InputError

from .registry import Recipe, Row

SIZES = ("debug", "small", "base")
PLACEHOLDERS = {"pretrained": "PRETRAINED_CKPT", "videomae": "VIDEOMAE_CKPT"}  # shown by ``recipe show`` when not given


@dataclass(frozen=True)
class RunOptions:
    """What a user fills in: ``manifest``/``fold`` (the fine-tuning data), ``seeds`` (0..n-1),
    ``size``, ``epochs`` (None: each command's default, the paper's 100), ``data_root``,
    ``out`` (root of the recipe folders), ``pretrained`` (the dual-modal pre-trained encoder the
    fine-tuning rows start from; None: from scratch), ``init_videomae`` (Table VII row 'none'),
    ``mixture`` the pre-training mixture of the rows that pre-train (its modality and image share
    are the row's flags), ``rows`` a subset of the rows to run (empty: every row)."""

    manifest: str = "dfew"
    fold: str | None = "1"
    seeds: int = 1
    size: str = "base"
    epochs: int | None = None
    data_root: str | None = None
    out: str = "runs"
    pretrained: str | None = None
    init_videomae: str | None = None
    mixture: str = "pretrain"
    rows: tuple[str, ...] = ()  # only these rows (empty: all)

    def __post_init__(self) -> None:
        if self.seeds < 1:
            raise InputError(f"--seeds must be at least 1, got {self.seeds}")
        if self.size not in SIZES:
            raise InputError(f"--size must be one of {', '.join(SIZES)}, got {self.size!r}")
        if self.epochs is not None and self.epochs < 1:
            raise InputError(f"--epochs must be at least 1, got {self.epochs}")
        if not self.manifest:
            raise InputError("--manifest must name a manifest")


def run_dir(opts: RunOptions, recipe: Recipe, row: Row, seed: int) -> Path:
    return Path(opts.out) / recipe.name / row.name / f"seed_{seed}"


def pretrain_dir(opts: RunOptions, recipe: Recipe, row: Row, seed: int) -> Path:
    return Path(opts.out) / recipe.name / row.name / f"pretrain_seed_{seed}"


def units(recipe: Recipe, opts: RunOptions) -> list[tuple[Row, int]]:
    """Every (row, seed) of the recipe (of ``opts.rows`` only, if given), rows first: the list
    ``--part`` splits."""
    rows = [recipe.row(name) for name in opts.rows] if opts.rows else list(recipe.rows)
    return [(row, seed) for row in rows for seed in range(opts.seeds)]


def row_commands(recipe: Recipe, row: Row, seed: int, opts: RunOptions, *, strict: bool = True) -> list[list[str]]:
    """The argument lists (after ``s4d``) of one (row, seed), in order. ``strict``: a missing
    ``--init-videomae`` is an error (a run); otherwise its placeholder is shown (``recipe show``)."""
    cmds = []
    for step in row.steps:
        common = ["--size", opts.size, "--seed", str(seed)]
        if opts.epochs is not None:
            common += ["--epochs", str(opts.epochs)]
        if opts.data_root:
            common += ["--data-root", str(opts.data_root)]
        if step.command == "pretrain":
            cmds.append(["pretrain", "-m", opts.mixture, *step.args, *common, "--out", str(pretrain_dir(opts, recipe, row, seed))])
            continue
        data = ["-m", step.manifest or opts.manifest]
        if step.fold and opts.fold is not None:
            data += ["--fold", str(opts.fold)]
        init = _init(step.init, recipe, row, seed, opts, strict)
        select = ["--select", recipe.select] if recipe.select != "last" else []
        cmds.append(["train", *data, *step.args, *common, *select, *init, "--out", str(run_dir(opts, recipe, row, seed))])
    return cmds


def _init(kind: str | None, recipe: Recipe, row: Row, seed: int, opts: RunOptions, strict: bool) -> list[str]:
    if kind is None:
        return []
    if kind == "pretrain":
        return ["--init", str(pretrain_dir(opts, recipe, row, seed) / "checkpoints" / "last.safetensors")]
    path = opts.pretrained if kind == "pretrained" else opts.init_videomae
    if path:
        return ["--init", str(path)]
    if kind == "videomae" and strict:
        raise InputError(f"--init-videomae: recipe {recipe.name} row {row.name} starts from VideoMAE's VoxCeleb2 weights; give their checkpoint path")
    if kind == "pretrained" and strict:
        return []  # from scratch: ``recipe run`` says so once (``scratch_rows``)
    return ["--init", PLACEHOLDERS[kind]]


def scratch_rows(recipe: Recipe, opts: RunOptions) -> list[str]:
    """Rows that would start from the dual-modal pre-training but run from scratch (no ``--pretrained``)."""
    if opts.pretrained:
        return []
    return [r.name for r in recipe.rows if any(s.init == "pretrained" for s in r.steps)]


def shell_line(args: list[str]) -> str:
    """One command as a shell line: ``s4d ...`` with every argument quoted where needed."""
    return shlex.join(["s4d", *args])
