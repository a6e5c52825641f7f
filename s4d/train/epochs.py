"""The epoch driver shared by fine-tuning and pre-training: resume, then per epoch the step
loop, the selection pass, the save and the log line, each epoch's save and log one
uninterruptible unit."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ..runtime.checkpointer import Checkpointer
from ..runtime.dist import Dist, barrier, mean
from ..runtime.rundir import append_metrics, restore_metrics
from ..runtime.signals import uninterrupted
from ..runtime.tracking import Tracker
from .select import TEST_SELECTED, Selector


def run_epochs(
    one_epoch,
    checkpointer: Checkpointer,
    out: Path,
    epochs: int,
    d: Dist,
    log,
    *,
    extra=None,
    stop_after_epochs: int | None = None,
    selector: Selector | None = None,
    tracker: Tracker | None = None,
) -> bool:
    """Resume, then ``one_epoch(epoch, step) -> (EpochStats, step)`` per epoch, each saved with
    its log line (and, with a ``selector``, its score and a new best checkpoint) as one
    uninterruptible unit; the ``tracker`` opens at the resumed step and gets each epoch's line.
    Returns False if stopped early on purpose."""
    start, step = checkpointer.resume()
    if tracker is not None:
        tracker.open(step)
    for note in checkpointer.notes:
        log(note)
    if d.main:
        restore_metrics(out / "metrics.jsonl", start, checkpointer.history, log)
    if selector is not None:
        selector.restore(checkpointer.selection, start - 1, checkpointer.model, extra or {})
        barrier(d)
    if start:
        log(f"resuming from epoch {start} (step {step})")
    for epoch in range(start, epochs):
        t0 = time.perf_counter()
        stats, step = one_epoch(epoch, step)
        loss = mean(stats.loss, d)  # the epoch's mean loss over all ranks
        record = {"epoch": epoch, "step": step, "loss": loss, "steps": stats.steps}
        if selector is not None:
            record.update(selector.evaluate(checkpointer.model, epoch))
        record["seconds"] = round(time.perf_counter() - t0, 3)
        with uninterrupted():
            checkpointer.save(epoch, step, extra, selection=selector.state() if selector else None, record=record)
            if selector is not None and selector.improved:
                selector.save_best(checkpointer.model, extra or {})
            if d.main:
                append_metrics(out, record)
        if tracker is not None:
            tracker.scalars({f"epoch/{k}": v for k, v in record.items() if k not in ("step", "steps") and isinstance(v, (int, float))}, step)
        barrier(d)
        log(
            f"epoch {epoch + 1}/{epochs}: loss {loss:.4f} ({stats.steps} steps per rank, {record['seconds']:.1f} s)"
            + (_selection_note(selector, record) if selector is not None else "")
        )
        if stop_after_epochs is not None and epoch + 1 - start >= stop_after_epochs and epoch + 1 < epochs:
            return False
    return True


def _selection_note(selector: Selector, record: dict[str, Any]) -> str:
    best = "none" if selector.epoch is None else selector.epoch + 1
    if selector.mode == "test":
        return f"; test top-1 (one random clip) {100 * record['test_one_clip_top1']:.2f}, best epoch {best} [{TEST_SELECTED}]"
    return f"; held-out UAR {100 * record['val_uar']:.2f} WAR {100 * record['val_war']:.2f}, best epoch {best}"
