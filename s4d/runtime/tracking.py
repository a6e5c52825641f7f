"""Experiment trackers beside ``metrics.jsonl``, which stays the source of truth.

- TensorBoard (on by default): event files in ``<run>/tensorboard/``; ``tensorboard --logdir
  runs`` compares runs, and the folds of ``s4d cv`` appear as ``fold_<f>``. A resumed run purges
  the events past its checkpoint's step, so an interrupted epoch is not drawn twice.
- Weights & Biases (``--wandb PROJECT``): the same values and figures, the config as the run's
  config; the run id is kept in ``<run>/wandb_id`` so a resume continues the same W&B run.
  ``WANDB_MODE=offline`` writes ``<run>/wandb/offline-run-*`` without a network (``wandb sync``
  uploads it later). W&B keeps the first value logged at a step, so after a kill mid-epoch it
  keeps the interrupted epoch's values; resume is exact, so they are the same numbers.

A tracker that cannot write (a full disk or quota: OSError, in the caller or in TensorBoard's writer
thread) prints one warning naming its folder and turns itself off; training goes on, because
``metrics.jsonl`` and the checkpoints hold everything and fail on their own with one line (and
resume) if the disk stays full. A half-written event file does not block a re-run.

Only rank 0 tracks; other ranks get a tracker that does nothing. Tags: ``train/loss`` and
``train/lr`` per optimiser step (rank 0's batches; the lr of the top layer group), ``epoch/*``
per epoch at its last step, ``test/*`` and figures at the end.
"""

from __future__ import annotations

import contextlib
import secrets
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from preprocess.errors import InputError


class Tracker:
    """Scalars and figures to TensorBoard and/or W&B, from ``open(resume_step)`` (once the run
    knows where it resumes) to ``close()``; ``Tracker(None)`` (ranks other than 0) does nothing."""

    def __init__(
        self,
        out: Path | None,
        *,
        tensorboard: bool = True,
        wandb_project: str | None = None,
        config: dict[str, Any] | None = None,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        self.out, self._want_tb, self._project, self._config = out, tensorboard, wandb_project, config or {}
        self._tb = self._wandb = None
        self.last_step = 0
        self._warn = warn or (lambda text: print(f"warning: {text}", file=sys.stderr, flush=True))
        self.failed: str | None = None  # the one warning given when a write failed

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        """A write that fails with OSError (ENOSPC, EFBIG, EDQUOT, EIO...) turns tracking off with
        one warning naming the folder; the run goes on (``metrics.jsonl`` is the source of truth)."""
        try:
            yield
        except OSError as err:
            self._give_up(err)

    def _give_up(self, err: OSError) -> None:
        where = self.out / "tensorboard" if self._tb is not None else self.out
        tb, wb, self._tb, self._wandb = self._tb, self._wandb, None, None
        for closer in (getattr(tb, "close", None), getattr(wb, "finish", None)):
            with contextlib.suppress(Exception):  # the same full disk fails the close too; already reported
                if closer is not None:
                    closer()
        if self.failed is None:
            detail = err.strerror or (str(err).strip().splitlines() or [type(err).__name__])[0][:120]
            self.failed = (
                f"{where}: cannot write tracking data ({detail}); TensorBoard/W&B logging is off for the rest "
                "of this run (metrics.jsonl keeps every epoch)"
            )
            self._warn(self.failed)

    def open(self, resume_step: int = 0) -> "Tracker":
        """Start logging; TensorBoard forgets what earlier writers logged past ``resume_step``
        (-1: everything, for a result that a re-run logs again)."""
        if self.out is None or self.active:
            return self
        self.last_step = resume_step
        if self._want_tb:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise InputError(
                    "TensorBoard logging needs the tensorboard package: pip install tensorboard (or run with --no-tensorboard)"
                ) from None

            _quiet_writer_thread_oserrors()
            with self._guard():
                self._tb = SummaryWriter(str(self.out / "tensorboard"), purge_step=resume_step + 1)  # steps past the checkpoint
        if self._project:
            with self._guard():
                self._wandb = _wandb_run(self.out, self._project, self._config)
        return self

    @property
    def active(self) -> bool:
        return self._tb is not None or self._wandb is not None

    def scalars(self, values: dict[str, float], step: int) -> None:
        values = {k: float(v) for k, v in values.items() if v is not None}
        self.last_step = max(self.last_step, step)
        with self._guard():
            if self._tb is not None:
                for tag, value in values.items():
                    self._tb.add_scalar(tag, value, step)
            if self._wandb is not None and values:
                self._wandb.log(values, step=step)

    def figure(self, tag: str, png: Path, step: int) -> None:
        """A figure written as PNG (the confusion matrix, the expert gates), as an image."""
        with self._guard():
            if self._tb is not None:
                from PIL import Image

                with Image.open(png) as im:
                    self._tb.add_image(tag, np.asarray(im.convert("RGB")), step, dataformats="HWC")
            if self._wandb is not None:
                import wandb

                self._wandb.log({tag: wandb.Image(str(png))}, step=step)

    def step_logger(self):
        """``on_step(step, loss, lr)`` for ``train.loop.train_epoch``, or None when inactive."""
        if not self.active:
            return None
        return lambda step, loss, lr: self.scalars({"train/loss": loss, "train/lr": lr}, step)

    def flush(self) -> None:
        with self._guard():
            if self._tb is not None:
                self._tb.flush()

    def close(self) -> None:
        with self._guard():
            if self._tb is not None:
                self._tb.close()
                self._tb = None
            if self._wandb is not None:
                self._wandb.finish()
                self._wandb = None


_QUIET = {"installed": False}


def _quiet_writer_thread_oserrors() -> None:
    """TensorBoard's writer thread re-raises a failed write (a full disk) and dies, which
    ``threading`` prints as a traceback; the same error reaches the caller at its next call,
    where ``Tracker`` reports it as one line. This hook drops only that thread's OSError and
    hands everything else to the previous hook."""
    if _QUIET["installed"]:
        return
    previous = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        if isinstance(args.exc_value, OSError) and type(args.thread).__name__ == "_AsyncWriterThread":
            return
        previous(args)

    threading.excepthook = hook
    _QUIET["installed"] = True


def _wandb_run(out: Path, project: str, config: dict[str, Any]):
    try:
        import wandb
    except ImportError:
        raise InputError("--wandb needs the wandb package: pip install 's4d[wandb]' (or pip install wandb)") from None
    from preprocess.safe_io import write_text_atomic

    id_file = out / "wandb_id"
    run_id = id_file.read_text().strip() if id_file.is_file() else secrets.token_hex(6)  # W&B ids: [a-z0-9]
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(id_file, run_id + "\n")
    name = f"{out.parent.name}-{out.name}" if out.name.startswith("fold_") else out.name  # s4d cv: dfew-fold_1
    try:
        return wandb.init(project=project, dir=str(out), name=name, id=run_id, resume="allow", config=config)
    except Exception as err:  # no login, no network, a refused project: one line, not a traceback
        detail = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise InputError(f"--wandb {project}: W&B could not start ({detail}); run `wandb login`, or set WANDB_MODE=offline") from None
