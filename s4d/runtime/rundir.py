"""A run folder: started (signals, process group, seeds), held (an ``flock`` against a second
process on the same ``--out``), pinned (``config.json``: a re-run must use the same settings to
resume) and logged (``metrics.jsonl``, one line per finished epoch)."""

from __future__ import annotations

import contextlib
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from preprocess.errors import InputError
from preprocess.lock import folder_lock
from preprocess.ownership import check_run, mark_run
from preprocess.safe_io import open_new, refuse_symlink, write_point, write_text_atomic

from .dist import Dist, barrier, setup
from .signals import stop_on_sigterm


def start_run(cfg: Any, out: Path, log) -> tuple[Dist, torch.device, Any]:
    """Signals, process group, seeds; returns (dist, device, rank-aware log).

    Every global generator is seeded with ``seed + rank``: the draws made per sample (MAE
    masks, router noise, Mixup, anything on torch's CPU or CUDA default generator, ``random``
    and numpy) differ between ranks, as the reference's ``seed + get_rank()``, and rank 0 of a
    one-process run keeps ``seed``. The model may therefore initialise differently per rank:
    wrapping it in DDP, which every multi-process run does, broadcasts rank 0's parameters
    (the buffers are fixed tables). The checkpointer saves and restores each rank's states."""
    stop_on_sigterm()
    d, device = setup(cfg.device)
    seed = cfg.seed + d.rank
    torch.manual_seed(seed)  # the CPU generator and every CUDA device's
    np.random.seed(seed)
    random.seed(seed)
    return d, device, (log if d.main else (lambda *_: None))


def run_lock(out: Path, d: Dist):
    """The run folder, held by this run's rank 0 against a second process on the same --out."""
    return folder_lock(out, "this run folder") if d.main else contextlib.nullcontext()


def commit_config(cfg: Any, out: Path, d: Dist) -> None:
    """Write (or check) ``config.json`` once the run's inputs have been validated, so a failed
    start does not pin a folder to wrong settings. Under DDP it first checks that every node
    sees the same run folder (``shared_fs``): a multi-node run needs it on a shared file system."""
    from .shared_fs import check_shared_folder

    check_shared_folder(out, d)
    kind = "pretrain" if hasattr(cfg, "mixture") else "train"
    check_run(out, kind)  # every rank reads the shared folder: an eval's or a shard folder is refused by all
    if d.main:
        mark_run(out, kind)
        write_config(out, cfg)
    barrier(d)


def write_config(out: Path, cfg: Any) -> None:
    """The resolved config beside the outputs; a re-run must use the same one to resume."""
    out.mkdir(parents=True, exist_ok=True)
    path = refuse_symlink(out / "config.json")
    new = json.loads(json.dumps(cfg.to_dict()))  # tuples as lists, as they are stored
    if path.is_file():
        old = _read_config(path)
        added = _defaults(cfg)  # a setting added after this run started reads as its default
        diff = sorted(k for k in set(old) | set(new) if k not in _NOT_IDENTITY and old.get(k, added.get(k)) != new.get(k))
        if diff:
            raise InputError(f"{path}: this run was started with different settings ({', '.join(diff)}); use a new --out")
    write_text_atomic(path, json.dumps(new, indent=2, sort_keys=True) + "\n")  # a planted symlink is refused


def _defaults(cfg: Any) -> dict[str, Any]:
    """The JSON form of each top-level field's default (for settings a newer s4d added: an older
    run's config.json lacks them and resumes when they are left at their defaults)."""
    import dataclasses

    out = {}
    for f in dataclasses.fields(cfg):
        if f.default is not dataclasses.MISSING:
            out[f.name] = json.loads(json.dumps(f.default))
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
            out[f.name] = json.loads(json.dumps(dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value))
    return out


def _read_config(path: Path) -> dict[str, Any]:
    """A run's ``config.json``; damage is one line naming it (the folder cannot be resumed safely)."""
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: not a readable run config ({type(err).__name__}: {str(err)[:120]}); restore it, or start a new --out") from None
    if not isinstance(old, dict):
        raise InputError(f"{path}: not a readable run config (not a JSON object); restore it, or start a new --out")
    return old


# Where data lives, how it is loaded and where it is logged do not change what a run computes.
_NOT_IDENTITY = {"data_root", "backend", "device", "out", "loader_threads", "tensorboard", "wandb"}


def restore_metrics(path: Path, next_epoch: int, saved: list[dict[str, Any]] | None, log=print) -> None:
    """Make ``metrics.jsonl`` hold exactly one line per saved epoch ``0..next_epoch-1``: drop
    lines of epochs that were not saved, drop a last line cut short by a kill or a full disk (one
    ``log`` line names the file), and write back, from the checkpoint's copy (``saved``: every
    saved epoch's line, None for a state written before it was kept), any saved epoch's line
    that is missing (a kill between the save and the line). Rewritten only if it changes."""
    refuse_symlink(path)
    text = path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""
    records = {r["epoch"]: r for r in _metrics_records(path, text, log) if r["epoch"] < next_epoch}
    missing = [r for r in saved or [] if r["epoch"] < next_epoch and r["epoch"] not in records]
    if missing:
        records.update({r["epoch"]: r for r in missing})
        log(
            f"{path}: restored the line(s) of epoch {', '.join(str(r['epoch'] + 1) for r in missing)} from the checkpoint "
            "(the run was stopped before writing them)"
        )
    new = "".join(json.dumps(records[e]) + "\n" for e in sorted(records))
    if new != text:
        write_text_atomic(path, new)


def _metrics_records(path: Path, text: str, log) -> list[dict[str, Any]]:
    """The records of ``metrics.jsonl``; an unreadable last line is dropped with one ``log`` line,
    an unreadable line before it is one InputError naming the file and line."""
    lines = text.splitlines()
    records = []
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or not isinstance(record.get("epoch"), int):
                raise ValueError("not an epoch record")
        except ValueError as err:
            if number == len(lines):
                log(f"{path}: dropped its last line, cut short (a kill or a full disk); the run resumes and writes it again")
                break
            raise InputError(f"{path}: line {number} is not an epoch record ({str(err)[:80]}); repair or remove the file to resume") from None
        records.append(record)
    return records


def append_metrics(out: Path, record: dict[str, Any]) -> None:
    """One finished epoch's line in ``metrics.jsonl``."""
    with open_new(out / "metrics.jsonl", "a") as fh:  # a planted symlink is refused, never appended to
        fh.write(json.dumps(record) + "\n")
    write_point(f"append {out / 'metrics.jsonl'}")


def trim_metrics(path: Path, next_epoch: int, log=print) -> None:
    """Drop log lines of epochs that were not saved (``restore_metrics`` without a saved line)."""
    restore_metrics(path, next_epoch, None, log)
