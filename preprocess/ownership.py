"""One owner per output folder.

Every command that writes a folder of results (``eval``, ``analyze``, ``export-hub``) claims it
first: the folder gets a marker ``.s4d-owner.json`` (``{"kind": "eval", "format_version": 1}``),
written without following a symlink (not an ``export-hub`` folder, which is uploaded as it is
and is recognised by its files instead). A folder is refused, with one line naming it, its owner and
what to do, when it belongs to

- a training run (``s4d train``, ``cv`` or ``pretrain``): recognised by its marker or, for runs
  made before markers, by its files (``config.json`` beside ``metrics.jsonl``, ``checkpoints/``,
  ``.s4d.lock``, ``tensorboard/`` or ``fold_*/``). A run's files are written only by that run;
  ``--force`` never overrides this;
- a shard folder (``shards.json``), or a marker of another kind;
- nobody we know, and holds files that are not this command's outputs (for ``export-hub``,
  whose folder is uploaded as a whole: any file it does not write, whoever owns the folder).

A folder of the same kind that already holds the outputs a command is about to write is refused
unless ``force``; with ``force`` exactly those outputs (the names in ``OUTPUTS``) are removed
first, so no stale file stays beside the new ones. Files we did not write are never removed.
``guard`` is the check alone (no marker, no emptiness): for a folder that only receives a file
of ours among the user's own, e.g. the folder of ``s4d predict --out X.parquet``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .errors import InputError
from .safe_io import refuse_symlink

MARKER = ".s4d-owner.json"
FORMAT_VERSION = 1
RUN_KINDS = ("train", "pretrain", "cv")  # a training run's folder: its own files only
SHARDS = "shards"

# What each kind may write into its folder: --force removes these names, and only these.
OUTPUTS: dict[str, tuple[str, ...]] = {
    "eval": ("summary.json", "predictions.parquet", "confusion.png", "recall.png"),
    "analyze": ("experts.json", "experts.png", "relevance.json", "relevance.png", "frame_order.json", "confusion.png", "recall.png"),
    "export-hub": ("model.safetensors", "model.json", "training_config.json", "summary.json", "confusion.png", "recall.png", "README.md"),
    "predict": (),
}
WHOLE = ("export-hub",)  # uploaded as a whole: nothing else in it, even with --force, and no marker (it would be uploaded)
SIGNATURES = {"export-hub": ("README.md", "model.safetensors", "training_config.json")}  # kinds known by their files
SUBFOLDER = {"analyze": "analysis"}  # where a kind's outputs go inside a folder of another (analyze scores RUN)
_RUN_FILES = ("metrics.jsonl", "checkpoints", ".s4d.lock", "tensorboard")
_WHOSE = {
    "train": "a training run (s4d train, cv or pretrain)",
    "pretrain": "a pre-training run (s4d pretrain)",
    "cv": "a cross-validation run (s4d cv)",
    SHARDS: "a shard folder (s4d shards)",
}


def whose(kind: str) -> str:
    """``kind`` in words, for messages: 'a training run (s4d train)', 's4d eval's outputs'."""
    return _WHOSE.get(kind, f"the outputs of s4d {kind}")


def read_marker(folder: Path) -> str | None:
    """The kind named by ``folder``'s marker, or None without one. A marker that is a symlink,
    not JSON or without a known ``kind`` is an ``InputError`` naming it."""
    path = Path(folder) / MARKER
    if not os.path.lexists(path):
        return None
    refuse_symlink(path)
    try:
        kind = json.loads(path.read_text(encoding="utf-8")).get("kind")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as err:
        raise InputError(
            f"{path}: unreadable owner marker ({type(err).__name__}); remove it if this folder is yours, or pick another --out"
        ) from None
    if kind not in (*RUN_KINDS, *OUTPUTS):
        raise InputError(f"{path}: unknown owner kind {kind!r}; remove it if this folder is yours, or pick another --out")
    return kind


def kind_of(folder: Path) -> str | None:
    """Who owns ``folder``: its marker's kind; else, by its files, 'train' for a training run
    (``config.json`` with ``metrics.jsonl``, ``checkpoints/``, ``.s4d.lock``, ``tensorboard/`` or
    ``fold_*/``: runs made before markers), 'shards' for a shard folder, 'export-hub' for an
    upload folder (``SIGNATURES``); None for anything else (missing, empty, or nobody's we know)."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    marked = read_marker(folder)
    if marked is not None:
        return marked
    if (folder / "config.json").exists() and (any(os.path.lexists(folder / n) for n in _RUN_FILES) or any(p.is_dir() for p in folder.glob("fold_*"))):
        return "train"
    if (folder / "shards.json").exists():
        return SHARDS
    return next((k for k, names in SIGNATURES.items() if all(os.path.lexists(folder / n) for n in names)), None)


def guard(folder: Path, kind: str) -> str | None:
    """Refuse ``folder`` if it belongs to a training run, a shard folder or another kind of
    output; returns its owner (``kind`` or None). Writes nothing."""
    folder = Path(folder)
    refuse_symlink(folder)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{folder}: not a folder; give --out a folder for s4d {kind}")
    owner = kind_of(folder)
    if owner is not None and owner != kind:
        raise InputError(
            f"{folder}: holds {whose(owner)}; s4d {kind} writes only into its own folder (a run's files are "
            f"written only by that run): pick another --out, e.g. {folder / SUBFOLDER.get(kind, kind)}"
        )
    return owner


def check(folder: Path, kind: str, *, force: bool, writes: tuple[str, ...] | None = None) -> list[Path]:
    """Whether ``kind`` may write ``writes`` (default: all of ``OUTPUTS[kind]``) into ``folder``;
    returns the earlier outputs that ``force`` replaces. Refuses (``InputError``) a folder owned
    by anything else (``guard``), an unmarked folder holding files that are not ``kind``'s
    outputs, and, without ``force``, one that already holds any of ``writes``. Writes nothing:
    call it before the work, and ``claim`` before writing."""
    folder = Path(folder)
    owner = guard(folder, kind)
    names = sorted(p.name for p in folder.iterdir() if p.name not in (MARKER, MARKER + ".tmp")) if folder.is_dir() else []
    foreign = [n for n in names if n not in OUTPUTS[kind]]
    if foreign and (owner is None or kind in WHOLE):
        what = "files s4d export-hub did not write" if kind in WHOLE else f"not an s4d {kind} folder"
        raise InputError(f"{folder}: not empty and {what} (holds {_few(foreign)}); pick a new or empty --out")
    earlier = [folder / n for n in names if n in (OUTPUTS[kind] if writes is None else writes)]
    if earlier and not force:
        raise InputError(
            f"{folder}: already holds s4d {kind} outputs ({_few([p.name for p in earlier])}); add --force to replace them, or pick another --out"
        )
    return earlier


def claim(folder: Path, kind: str, *, force: bool, writes: tuple[str, ...] | None = None) -> Path:
    """``check``, then make ``folder`` ours: created if missing, the earlier outputs that
    ``force`` replaces removed (never a file we do not write), the marker written. Returns
    ``folder``."""
    from .shards.writer import write_json_atomic

    folder = Path(folder)
    earlier = check(folder, kind, force=force, writes=writes)
    folder.mkdir(parents=True, exist_ok=True)
    for path in earlier:
        if path.is_dir() and not path.is_symlink():
            raise InputError(f"{path}: a folder where s4d {kind} writes a file; remove it or pick another --out")
        path.unlink()  # a symlink is removed itself, never its target
    if kind not in WHOLE and read_marker(folder) is None:
        write_json_atomic(folder / MARKER, {"kind": kind, "format_version": FORMAT_VERSION})
    return folder


def _few(names: list[str], most: int = 4) -> str:
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")


def check_run(folder: Path, kind: str) -> None:
    """For a training run (``kind``: train or pretrain), on every rank before anything is
    written: refuse a folder holding another command's outputs or another kind's marker.
    Reads only, so all ranks of a run on a shared folder refuse together."""
    folder = Path(folder)
    owner = kind_of(folder)
    marked = read_marker(folder) if folder.is_dir() else None
    if (owner is not None and owner not in RUN_KINDS) or (marked is not None and marked != kind):
        raise InputError(f"{folder}: holds {whose(marked or owner)}; s4d {kind} needs a run folder of its own: pick another --out")


def mark_run(folder: Path, kind: str) -> None:
    """``check_run``, then (rank 0, once the run's settings are committed) the marker, written
    if missing: runs made before markers get one on resume."""
    from .shards.writer import write_json_atomic

    folder = Path(folder)
    check_run(folder, kind)
    if (read_marker(folder) if folder.is_dir() else None) is None:
        folder.mkdir(parents=True, exist_ok=True)
        write_json_atomic(folder / MARKER, {"kind": kind, "format_version": FORMAT_VERSION})
