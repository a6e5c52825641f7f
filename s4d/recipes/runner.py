"""``s4d recipe run``: a recipe's (row, seed) units, or this SLURM array task's share of them,
each as ``sys.executable -m s4d ...`` subprocesses (a crash of one unit is reported and the
others go on). A unit whose ``summary.json`` exists is skipped; an interrupted one resumes,
because the commands themselves resume from their run folder. ``recipe.json`` in the recipe
folder records what the rows were run with (the report reads the dataset from it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Callable

from preprocess import safe_json
from preprocess.errors import InputError
from preprocess.run import parse_part
from preprocess.shards.writer import write_json_atomic

from .commands import RunOptions, row_commands, run_dir, scratch_rows, shell_line, units
from .registry import Recipe

RECORD = "recipe.json"


def planned(recipe: Recipe, opts: RunOptions, part: str | None = None) -> list[tuple[str, int, list[list[str]]]]:
    """(row, seed, commands) of every unit this task runs: all of them, or with ``part`` ("i/n"
    or "auto") every n-th unit from the i-th (``preprocess.run.parse_part``)."""
    todo = units(recipe, opts)
    if part is not None:
        i, n = parse_part(part)
        todo = todo[i::n]
    return [(row.name, seed, row_commands(recipe, row, seed, opts)) for row, seed in todo]


def run_recipe(
    recipe: Recipe, opts: RunOptions, *, part: str | None = None, dry_run: bool = False, log: Callable[[str], None] = print, env: dict | None = None
) -> list[str]:
    """Run (or with ``dry_run`` print, one per line) this task's units; returns the failed units
    as ``row/seed_s`` (empty: all done)."""
    plan = planned(recipe, opts, part)
    if dry_run:
        for _, _, cmds in plan:
            for args in cmds:
                log(shell_line(args))
        return []
    scratch = [r for r in scratch_rows(recipe, opts) if any(r == name for name, _, _ in plan)]
    if scratch:
        log(f"note: no --pretrained: rows {', '.join(scratch)} fine-tune from scratch (the paper starts them from its dual-modal pre-training)")
    _record(recipe, opts)
    failed = []
    for row, seed, cmds in plan:
        unit = f"{row}/seed_{seed}"
        done = run_dir(opts, recipe, recipe.row(row), seed) / "summary.json"
        if done.is_file():
            log(f"{unit}: done ({done}), skipped")
            continue
        for args in cmds:
            log(f"{unit}: {shell_line(args)}")
            rc = subprocess.run([sys.executable, "-m", "s4d", *args], env=env).returncode
            if rc != 0:
                log(f"{unit}: failed (exit {rc}); going on with the other rows")
                failed.append(unit)
                break
    log(f"recipe {recipe.name}: {len(plan) - len(failed)} of {len(plan)} units done" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return failed


def _record(recipe: Recipe, opts: RunOptions) -> None:
    """``<out>/<recipe>/recipe.json``: the options the rows run with. A second run with another
    manifest, fold or size into the same folder is refused: its units would mix with these."""
    folder = Path(opts.out) / recipe.name
    record = {"recipe": recipe.name, "manifest": dataset_name(opts.manifest), "fold": opts.fold, "size": opts.size, "epochs": opts.epochs}
    path = folder / RECORD
    if path.is_file():
        old = safe_json.read_json(path, "the recipe record")
        diff = [f"{k} {old.get(k)!r} -> {record[k]!r}" for k in ("manifest", "fold", "size") if old.get(k) != record[k]]
        if diff:
            raise InputError(f"{path}: this folder holds runs made with other options ({'; '.join(diff)}); pick another --out")
        return
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, record)


def dataset_name(manifest: str) -> str:
    """The dataset a manifest names: ``dfew`` for ``dfew`` or ``manifests/dfew.json``, the folder's
    name for own data (``DIR/manifest.json``)."""
    path = Path(manifest)
    return path.parent.name if path.name == "manifest.json" else path.stem


def read_record(folder: Path) -> dict:
    path = Path(folder) / RECORD
    return safe_json.read_json(path, "the recipe record") if path.is_file() else {}
