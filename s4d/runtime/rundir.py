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

from preprocess.lock import folder_lock
from preprocess.safe_io import open_new, refuse_symlink, write_text

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
    if d.main:
        write_config(out, cfg)
    barrier(d)


def write_config(out: Path, cfg: Any) -> None:
    """The resolved config beside the outputs; a re-run must use the same one to resume."""
    out.mkdir(parents=True, exist_ok=True)
    path = refuse_symlink(out / "config.json")
    new = json.loads(json.dumps(cfg.to_dict()))  # tuples as lists, as they are stored
    if path.is_file():
        old = json.loads(path.read_text())
        diff = sorted(k for k in set(old) | set(new) if k not in _NOT_IDENTITY and old.get(k) != new.get(k))
        if diff:
            raise ValueError(f"{path}: this run was started with different settings ({', '.join(diff)}); use a new --out")
    write_text(path, json.dumps(new, indent=2, sort_keys=True) + "\n")  # a planted symlink is refused


# Where data lives, how it is loaded and where it is logged do not change what a run computes.
_NOT_IDENTITY = {"data_root", "backend", "device", "out", "loader_threads", "tensorboard", "wandb"}


def trim_metrics(path: Path, next_epoch: int) -> None:
    """Drop log lines of epochs that were not saved (a hard kill between log and save)."""
    if refuse_symlink(path).is_file():
        lines = [x for x in path.read_text().splitlines() if x and json.loads(x)["epoch"] < next_epoch]
        write_text(path, "".join(x + "\n" for x in lines))


def append_metrics(out: Path, record: dict[str, Any]) -> None:
    """One finished epoch's line in ``metrics.jsonl``."""
    with open_new(out / "metrics.jsonl", "a") as fh:  # a planted symlink is refused, never appended to
        fh.write(json.dumps(record) + "\n")
