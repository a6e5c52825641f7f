"""A run's resumable state: ``checkpoints/last.safetensors`` (+ ``.json``) and
``checkpoints/state.pt`` (optimizer, scheduler, every rank's RNG states, epoch, step, the
selection's best-so-far and the data fingerprint), saved so that a kill at any point resumes
from the last complete epoch, and refused with one line when it belongs to another run."""

from __future__ import annotations

import contextlib
import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from preprocess.errors import InputError
from preprocess.safe_io import replace, write_point

from ..checkpoint import load_model, save_checkpoint
from ..checkpoint.format import finish_torn_save
from .dist import Dist, barrier, gather


def _rng_state() -> dict[str, Any]:
    """All RNG states as tensors and plain Python values, so ``weights_only`` loading reads them."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "python": [version, list(internal), gauss],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


class Checkpointer:
    """``checkpoints/last.safetensors`` (+ ``.json``) and ``checkpoints/state.pt`` (optimizer,
    scheduler, RNG states, epoch, step) of a run; only rank 0 writes, every rank resumes."""

    def __init__(self, out: Path, model: torch.nn.Module, optimizer, scheduler, dist_: Dist) -> None:
        self.model, self.optimizer, self.scheduler, self.dist = model, optimizer, scheduler, dist_
        self.ckpt = out / "checkpoints" / "last.safetensors"
        self.state_path = out / "checkpoints" / "state.pt"
        self.selection: dict[str, Any] | None = None  # the best-so-far of model selection, as resumed
        self.fingerprint: dict[str, Any] | None = None  # what the run trains on; a resume must match it
        self.notes: list[str] = []  # what resume repaired, for the log
        self.history: list[dict[str, Any]] | None = None  # every saved epoch's metrics line (None: a state from before)

    def save(
        self,
        epoch: int,
        step: int,
        extra: dict[str, Any] | None = None,
        selection: dict[str, Any] | None = None,
        record: dict[str, Any] | None = None,
    ) -> None:
        """Every rank contributes its RNG states (Mixup and masks differ per rank); rank 0 writes
        ``state.pt.tmp``, then the weights (two files, two renames), then renames the state: the
        commit. A kill after any of these writes resumes exactly (``resume``): before the weights'
        first rename, from the previous epoch; after it, from this one. ``record`` (the epoch's
        ``metrics.jsonl`` line) travels in the state with those of the earlier epochs, so a kill
        before the line is appended, or one that cuts a line short, loses nothing: the resume
        writes them."""
        rngs = gather(_rng_state(), self.dist)
        if not self.dist.main:  # every rank holds the same weights and optimizer state
            return
        state = {
            "epoch": epoch,
            "step": step,
            "world": self.dist.world,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": rngs,
            "selection": selection,
            "fingerprint": self.fingerprint,
            "history": [*(self.history or []), json.loads(json.dumps(record))] if record is not None else self.history,
        }
        tmp = self.state_path.with_name("state.pt.tmp")
        tmp.parent.mkdir(parents=True, exist_ok=True)
        try:
            torch.save(state, tmp)
            write_point(f"write {tmp}")
            save_checkpoint(self.model, self.ckpt, extra={"epoch": epoch, **(extra or {})})
            replace(tmp, self.state_path)
        except Exception as err:  # a full disk or quota (torch reports it as a RuntimeError, safetensors as its own error)
            detail = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
            raise OSError(
                f"{tmp.parent}: cannot write the epoch {epoch + 1} checkpoint ({detail}); free space, then "
                "re-run the same command: it resumes from the last complete epoch"
            ) from None
        self.history = state["history"]

    def resume(self) -> tuple[int, int]:
        """(next epoch, global step) from the saved state, or (0, 0). A save cut short is first
        completed (the weights renamed, their sidecar not: ``finish_torn_save``; the weights and
        sidecar renamed, the state not: the state is promoted) or, before its weights were
        renamed, forgotten: the previous epoch's files stand."""
        tmp = self.state_path.with_name("state.pt.tmp")
        if self.dist.main:
            finish_torn_save(self.ckpt)
        barrier(self.dist)
        if not self.state_path.is_file() and not tmp.is_file():
            return 0, 0
        weights_epoch = _weights_epoch(self.ckpt) if self.ckpt.is_file() else None
        state = _read_state(self.state_path) if self.state_path.is_file() else None
        if tmp.is_file():
            try:
                pending = _read_state(tmp)
            except ValueError as err:  # a kill or a full disk during the save: the last complete state stands
                aside = tmp.with_name(tmp.name + ".unreadable")
                if self.dist.main:
                    with contextlib.suppress(OSError):
                        os.replace(tmp, aside)
                self.notes.append(f"set aside {aside.name} ({err}); resuming from the last complete state")
                pending = None
            if pending is not None and pending["epoch"] == weights_epoch:  # killed after the weights, before the rename
                state = pending
                if self.dist.main:
                    replace(tmp, self.state_path)
            if state is None and weights_epoch is None:  # the first save never completed: start afresh
                return 0, 0
        if state is None or state["epoch"] != weights_epoch:
            raise InputError(
                f"{self.state_path.parent}: weights (epoch {weights_epoch}) and optimizer state "
                f"(epoch {None if state is None else state['epoch']}) do not match; start a new --out"
            )
        if state["world"] != self.dist.world:
            raise InputError(
                f"{self.state_path}: saved by {state['world']} process(es); resume with the same number "
                f"(now {self.dist.world}) for an exact continuation"
            )
        old = state.get("fingerprint")
        if old is not None and self.fingerprint is not None and old != self.fingerprint:
            diff = ", ".join(
                f"{k}: {old.get(k)} -> {self.fingerprint.get(k)}"
                for k in sorted(set(old) | set(self.fingerprint))
                if old.get(k) != self.fingerprint.get(k)
            )
            raise InputError(
                f"{self.state_path}: the run started on other data or settings ({diff}); resuming would not "
                "continue the same run: restore them, or start a new --out"
            )
        self.model.load_state_dict(load_model(self.ckpt).state_dict())
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"][self.dist.rank])
        self.selection = state.get("selection")
        self.history = state.get("history")
        return state["epoch"] + 1, state["step"]


def data_fingerprint(datasets: dict[str, Any], backends: dict[str, str]) -> dict[str, Any]:
    """What a run trains on, for resume to compare: per dataset its sample count and a hash of
    its keys, labels, frame counts and shard file sizes; the loader backends (DALI and the
    fallback draw different augmentations); and the augmentation's version (the same seed draws
    other augmentations after a change of ``pipelines.augment``)."""
    import hashlib

    from pipelines.augment import AUGMENT_VERSION

    out: dict[str, Any] = {}
    for name, ds in datasets.items():
        h = hashlib.sha256()
        h.update("\n".join(ds.keys).encode())
        h.update(np.ascontiguousarray(ds.labels, dtype=np.int64).tobytes())
        h.update(np.ascontiguousarray(ds.frames, dtype=np.int64).tobytes())
        h.update(" ".join(str(p.stat().st_size) for p in ds.reader.paths).encode())
        out[f"{name} samples"] = len(ds)
        out[f"{name} data"] = h.hexdigest()[:16]
    out.update({f"{name} backend": b for name, b in backends.items()})
    out["augmentation"] = AUGMENT_VERSION
    return out


def _read_state(path: Path) -> dict[str, Any]:
    """A ``state.pt`` read without executing anything (``weights_only``); any failure is one
    InputError naming the file."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated, zero bytes, or not ours (a planted pickle is refused here)
        raise InputError(
            f"{path}: unreadable as an s4d training state ({type(err).__name__}: "
            f"{str(err).strip().splitlines()[0][:120] if str(err).strip() else 'no detail'})"
        ) from None
    if not isinstance(state, dict) or not {"epoch", "step", "world", "optimizer", "scheduler", "rng"} <= set(state):
        raise InputError(f"{path}: not an s4d training state (keys missing)")
    return state


def _weights_epoch(ckpt: Path) -> int | None:
    meta = ckpt.with_suffix(".json")
    try:
        return json.loads(meta.read_text()).get("epoch")
    except (OSError, ValueError, AttributeError) as err:
        raise InputError(f"{meta}: unreadable checkpoint metadata ({type(err).__name__}); start a new --out") from None
