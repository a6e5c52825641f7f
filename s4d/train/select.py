"""Which checkpoint a fine-tuning run reports, honestly labelled (``--select``).

- ``last`` (default): the last epoch.
- ``val``: a seeded, class-stratified share of the training fold is held out (never trained
  on); after every epoch it is scored with the test protocol (2 clips per video) and the best
  epoch by ``select_metric`` (UAR by default, the DFER headline metric) is kept.
- ``test``: the authors' protocol. After every epoch, top-1 accuracy on the *test* split with one
  random clip per video (seeded per epoch); the best epoch is then tested with the 2-clip
  protocol. Its numbers are optimistic and labelled ``test-selected (as the authors)``.

The best checkpoint is ``checkpoints/best.safetensors`` (+ ``.json``); its epoch and score are
part of ``state.pt``, so a killed run resumes with the same best-so-far.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from preprocess.errors import InputError
from preprocess.safe_io import write_text
from preprocess.safe_json import read_json

from ..checkpoint import save_checkpoint
from ..eval.metrics import scores
from ..eval.protocol import pool, predict
from ..runtime.dist import Dist, gather

SELECT_MODES = ("last", "val", "test")
SELECT_METRICS = ("uar", "war")
TEST_SELECTED = "test-selected (as the authors)"
LAST = "last epoch (not selected on test)"


def holdout_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held-out) positions, both sorted. Per class ``round(fraction * n)`` samples are
    held out, at least one and never all of a class (a class of one stays in training); the
    draw depends only on (labels, fraction, seed), so every rank and every resume agree."""
    labels = np.asarray(labels)
    rng = np.random.default_rng([seed, 0x5E1EC7])
    held = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        k = min(max(int(fraction * len(idx) + 0.5), 1), len(idx) - 1)
        held.append(rng.permutation(idx)[:k])
    held_out = np.sort(np.concatenate(held)) if held else np.zeros(0, np.int64)
    return np.setdiff1d(np.arange(len(labels)), held_out), held_out


def record_holdout(path: Path, keys: list[str], fraction: float, seed: int) -> None:
    """Write the held-out keys beside the run, or check them against the ones it started with."""
    new = {"fraction": fraction, "seed": seed, "keys": list(keys)}
    if path.is_file():
        old = read_json(path, "the held-out split")
        if old != new:
            raise InputError(f"{path}: the held-out split differs from the one this run started with (the training data changed?); use a new --out")
        return
    write_text(path, json.dumps(new, indent=1) + "\n")  # a planted symlink is refused


class Selector:
    """Scores every epoch on the selection set (all ranks take part, rank 0 decides) and keeps
    the best epoch's weights in ``checkpoints/best.safetensors``."""

    def __init__(
        self,
        mode: str,
        metric: str,
        loader,
        num_classes: int,
        out: Path,
        dist_: Dist,
        device: torch.device,
        autocast: torch.dtype | None,
        *,
        fraction: float | None = None,
    ) -> None:
        self.mode, self.loader, self.num_classes, self.dist, self.device, self.autocast = mode, loader, num_classes, dist_, device, autocast
        self.metric = "war" if mode == "test" else metric  # the authors select on top-1 accuracy
        self.fraction = fraction
        self.path = out / "checkpoints" / "best.safetensors"
        self.epoch: int | None = None
        self.score = -math.inf
        self.improved = False

    def label(self) -> str:
        if self.mode == "test":
            return f"{TEST_SELECTED}: best top-1 on the test split with one random clip per video, then the 2-clip test"
        return f"best {self.metric.upper()} on a held-out {self.fraction:.0%} of the training fold"

    def evaluate(self, model: torch.nn.Module, epoch: int) -> dict[str, Any]:
        """Score this epoch; returns the fields for its ``metrics.jsonl`` line."""
        pred = pool(gather(predict(model, self.loader.epoch(epoch), "video", self.device, self.autocast), self.dist))
        s = scores(pred["labels"], pred["probs"].argmax(1), self.num_classes)
        score = gather(s[self.metric], self.dist)[0]  # rank 0's number decides on every rank
        self.improved = bool(score > self.score)  # NaN never improves; ties keep the earlier epoch
        if self.improved:
            self.epoch, self.score = epoch, float(score)
        prefix = "test_one_clip" if self.mode == "test" else "val"
        fields = {f"{prefix}_top1": s["war"]} if self.mode == "test" else {f"{prefix}_uar": s["uar"], f"{prefix}_war": s["war"]}
        return {**fields, "best_epoch": self.epoch}

    def state(self) -> dict[str, Any]:
        return {"mode": self.mode, "epoch": self.epoch, "score": self.score}

    def save_best(self, model: torch.nn.Module, extra: dict[str, Any]) -> None:
        if self.dist.main:
            save_checkpoint(
                model,
                self.path,
                extra={**extra, "epoch": self.epoch, "selected_on": self.label(), "select": self.mode, "metric": self.metric, "score": self.score},
            )

    def restore(self, state: dict[str, Any] | None, resumed_epoch: int, model: torch.nn.Module, extra: dict[str, Any]) -> None:
        """Best-so-far from the resumed state. A kill after the state was saved and before the
        best weights were written is repaired from the just-loaded weights of that epoch."""
        if state is None:
            return
        self.epoch, self.score = state["epoch"], float(state["score"])
        if self.epoch is None:
            return
        meta = self.path.with_suffix(".json")
        on_disk = read_json(meta, "the best checkpoint's config").get("epoch") if meta.is_file() and self.path.is_file() else None
        if on_disk == self.epoch:
            return
        if self.epoch != resumed_epoch:
            raise InputError(f"{self.path}: holds epoch {on_disk} but the run's state selected epoch {self.epoch}; start a new --out")
        self.save_best(model, extra)
