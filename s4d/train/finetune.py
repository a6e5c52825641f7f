"""``s4d train``: joint fine-tuning on a manifest's fold, with outputs and exact resume.

A run directory holds ``config.json`` (the resolved config), ``checkpoints/last.safetensors``
(+ ``.json``) and ``checkpoints/state.pt`` (optimizer, scheduler, RNG states, epoch, step),
``metrics.jsonl`` (one line per epoch), and at the end ``predictions.parquet``,
``confusion.png`` and ``summary.json`` (the last epoch). With ``select`` val or test (module
``select``) also ``checkpoints/best.safetensors``, ``selected/`` (its predictions, plots and
summary) and, for val, ``holdout.json``; ``summary.json`` reports last and selected side by side.
Re-running the same command continues from the last finished epoch; the data order and
augmentation are pure functions of (seed, epoch), and the RNG states are restored, so a resumed
run ends with the same weights as an uninterrupted one (and the same best checkpoint).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipelines import Augment, JointLoader, Loader, LoaderConfig, open_dataset
from pipelines.mixing import BatchMixer
from preprocess.lock import folder_lock
from preprocess.manifest import Manifest, ManifestError, load_manifest, load_sfer

from ..analysis.plots import plot_scores
from ..checkpoint import init_from_pretrained, load_model, save_checkpoint
from ..models import build_model, model_config
from ..runtime.device import AMP_MODES
from ..runtime import autocast_dtype, dali_device_id, resolve_device
from .dist import Dist, barrier, gather, mean, setup
from .loop import predict, train_epoch
from .metrics import scores
from .optim import OptimConfig, build_optimizer, build_scheduler
from .select import LAST, SELECT_METRICS, SELECT_MODES, TEST_SELECTED, Selector, holdout_split, pool, record_holdout


@dataclass(frozen=True)
class TrainConfig:
    manifest: str
    out: str
    fold: str | None = None
    variant: str = "s4d"
    size: str = "base"
    epochs: int = 100
    video_batch: int = 16
    image_batch: int = 32
    sfer: bool = True
    proportion: float | None = None  # default: the manifest's sfer.proportion
    alpha: float | None = None  # None: weight 1 on both tasks (reference); A: video batches A, image batches 1 - A
    mixup: float = 0.8
    cutmix: float = 1.0
    smoothing: float = 0.1
    augment: bool = True
    init: str | None = None
    data_root: str | None = None
    seed: int = 0
    backend: str = "auto"
    device: str = "auto"
    loader_threads: int | None = None  # DALI threads per process; None: the cores per rank
    amp: str = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU | bf16 | off
    accum: int = 1  # batches accumulated per optimiser step
    compile: bool = False
    select: str = "last"  # which checkpoint is reported besides the last: last | val | test (see ``select``)
    val_fraction: float = 0.1  # select=val: share of the training fold held out (stratified, seeded)
    select_metric: str = "uar"  # select=val: uar | war (select=test always uses top-1, as the authors)
    optim: OptimConfig = field(default_factory=OptimConfig)

    def __post_init__(self) -> None:
        if self.amp not in AMP_MODES:  # fp16 would need loss scaling; bf16 does not
            raise ValueError(f"amp must be auto, bf16 or off, got {self.amp!r}")
        if self.epochs <= 0 or self.video_batch <= 0 or self.image_batch <= 0 or self.accum <= 0:
            raise ValueError("epochs, video_batch, image_batch and accum must be positive")
        if self.alpha is not None and not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")
        if self.select not in SELECT_MODES:
            raise ValueError(f"select must be one of {', '.join(SELECT_MODES)}, got {self.select!r}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.select_metric not in SELECT_METRICS:
            raise ValueError(f"select_metric must be one of {', '.join(SELECT_METRICS)}, got {self.select_metric!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _shard_folder(m: Manifest, data_root: str | None, manifest_arg: str) -> Path:
    """Own-data manifests live beside their shards; named ones under the data root."""
    path = Path(manifest_arg)
    if path.name == "manifest.json" and (path.parent / "shards.json").is_file():
        return path.parent
    return m.shard_dir(data_root)


def _rng_state() -> dict[str, Any]:
    """All RNG states as tensors and plain Python values, so ``weights_only`` loading reads them."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    state = {"torch": torch.get_rng_state(), "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
             "python": [version, list(internal), gauss]}
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


class Run:
    """Everything one fine-tuning run needs, built from a ``TrainConfig``."""

    def __init__(self, cfg: TrainConfig, dist_: Dist | None = None, device: torch.device | None = None) -> None:
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.dist = dist_ or Dist()
        self.device = device or resolve_device(cfg.device)
        self.manifest = load_manifest(cfg.manifest)
        m = self.manifest
        if m.modality != "video":
            raise ManifestError(f"{m.source}: s4d train fine-tunes on a video manifest; {m.name} holds images")
        self.fold = cfg.fold or next(iter(m.folds))
        folder = _shard_folder(m, cfg.data_root, cfg.manifest)
        self.train_ds = open_dataset(m, folder, self.fold, "train")
        if not len(self.train_ds):
            raise ManifestError(f"{m.source or m.name}: fold {self.fold} has no training samples (partitions "
                                f"{', '.join(m.folds[self.fold].train) or 'none'}); s4d eval scores a model on evaluation-only data")
        self.test_ds = open_dataset(m, folder, self.fold, "test") if m.folds[self.fold].test else None
        self.val_ds = None
        if cfg.select == "val":  # held out of the training fold: never trained on
            kept, held = holdout_split(self.train_ds.labels, cfg.val_fraction, cfg.seed)
            if not len(held):
                raise ValueError(f"val_fraction {cfg.val_fraction}: fold {self.fold} has no class with 2 or more training "
                                 "clips to hold out")
            self.train_ds, self.val_ds = self.train_ds.subset(kept), self.train_ds.subset(held)
        if cfg.select == "test" and self.test_ds is None:
            raise ValueError(f"select test: fold {self.fold} of {m.name} has no test partition")
        self.input_settings = input_settings(m, folder, self.train_ds.keys)

        names = {"video": m.classes}
        sfer = load_sfer(m) if cfg.sfer else None
        if sfer is not None:
            names["image"] = sfer.classes
        model_cfg = model_config(cfg.variant, cfg.size, video_classes=len(m.classes), image_classes=len(sfer.classes) if sfer else 7)
        model_cfg = dataclasses.replace(model_cfg, class_names={t: names[t] for t in model_cfg.heads if t in names})
        self.model = build_model(model_cfg)  # class names travel in the checkpoint's config
        enc = self.model.config.encoder
        if m.clip.frames != enc.num_frames:
            raise ManifestError(f"{m.source}: clip.frames is {m.clip.frames} but the {cfg.size} model takes {enc.num_frames} frames")
        self.init_report = init_from_pretrained(self.model, cfg.init) if cfg.init else None
        self.model.to(self.device)
        # DDP: one head (and for MoE, some experts) idle per single-source batch -> find_unused_parameters
        self.ddp = (torch.nn.parallel.DistributedDataParallel(self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                                                              find_unused_parameters=True, broadcast_buffers=False)
                    if self.dist.active else self.model)  # the only buffers are fixed position tables

        aug = Augment() if cfg.augment else Augment.off()
        self.video_cfg = LoaderConfig(batch_size=cfg.video_batch, train=True, size=enc.img_size, frames=m.clip.frames,
                                      stride=m.clip.stride, crop=m.clip.crop, augment=aug, seed=cfg.seed,
                                      num_threads=cfg.loader_threads)
        self.test_cfg = dataclasses.replace(self.video_cfg, train=False, augment=Augment.off())
        rank, world = self.dist.rank, self.dist.world
        self.device_id = dali_device_id(self.device)  # DALI decodes where we train
        self.video = Loader(self.train_ds, self.video_cfg, rank=rank, world=world, backend=cfg.backend, device_id=self.device_id)
        self.joint = None
        if sfer is not None and "image" in self.model.head:
            image_ds = open_dataset(sfer, sfer.shard_dir(cfg.data_root), None, "train")
            image_cfg = LoaderConfig(batch_size=cfg.image_batch, train=True, size=enc.img_size, class_balanced=True,
                                     augment=Augment.image() if cfg.augment else Augment.off(), seed=cfg.seed + 1,
                                     num_threads=cfg.loader_threads)
            proportion = m.sfer.proportion if cfg.proportion is None else cfg.proportion
            images = Loader(image_ds, image_cfg, rank=rank, world=world, backend=cfg.backend, device_id=self.device_id)
            self.joint = JointLoader(self.video, images, proportion, seed=cfg.seed)
        self.mixers = {task: BatchMixer(n, cfg.mixup, cfg.cutmix, cfg.smoothing) for task, n in self.model.config.heads.items()}
        batches = len(self.joint.schedule(0)) if self.joint else len(self.video.batches(0))
        steps = -(-batches // cfg.accum)  # optimiser steps per epoch
        self.optimizer = build_optimizer(self.model, cfg.optim, global_batch=cfg.video_batch * world * cfg.accum)
        self.scheduler = build_scheduler(self.optimizer, cfg.optim, cfg.epochs, steps, global_batch=cfg.video_batch * world * cfg.accum)
        self.checkpointer = Checkpointer(self.out, self.model, self.optimizer, self.scheduler, self.dist)
        loaders = {"train": self.video, **({"images": self.joint.image} if self.joint else {})}
        self.checkpointer.fingerprint = data_fingerprint({k: v.ds for k, v in loaders.items()}, {k: v.backend for k, v in loaders.items()})
        self.autocast = autocast_dtype(cfg.amp, self.device)
        self.batches_per_epoch = batches
        self.selector = None
        if cfg.select != "last":
            ds, sel_cfg = ((self.val_ds, self.test_cfg) if cfg.select == "val"  # test: one random clip per video, as the authors
                           else (self.test_ds, dataclasses.replace(self.test_cfg, random_clip=True)))
            loader = Loader(ds, sel_cfg, rank=rank, world=world, backend=cfg.backend, device_id=self.device_id)
            self.selector = Selector(cfg.select, cfg.select_metric, loader, len(m.classes), self.out, self.dist, self.device,
                                     self.autocast, fraction=cfg.val_fraction)
        if cfg.compile:
            self.ddp = torch.compile(self.ddp)

    def batches(self, epoch: int):
        return self.joint.epoch(epoch) if self.joint else (("video", b) for b in self.video.epoch(epoch))



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

    def save(self, epoch: int, step: int, extra: dict[str, Any] | None = None, selection: dict[str, Any] | None = None) -> None:
        """Every rank contributes its RNG states (Mixup and masks differ per rank); rank 0 writes
        ``state.pt.tmp``, then the weights, then renames the state: a kill in between leaves a
        ``.tmp`` whose epoch matches the weights, which ``resume`` promotes."""
        rngs = gather(_rng_state(), self.dist)
        if not self.dist.main:  # every rank holds the same weights and optimizer state
            return
        state = {"epoch": epoch, "step": step, "world": self.dist.world, "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict(), "rng": rngs, "selection": selection, "fingerprint": self.fingerprint}
        tmp = self.state_path.with_name("state.pt.tmp")
        tmp.parent.mkdir(parents=True, exist_ok=True)
        try:
            torch.save(state, tmp)
            save_checkpoint(self.model, self.ckpt, extra={"epoch": epoch, **(extra or {})})
        except Exception as err:  # a full disk or quota (torch reports it as a RuntimeError, safetensors as its own error)
            detail = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
            raise OSError(f"{tmp.parent}: cannot write the epoch {epoch + 1} checkpoint ({detail}); free space, then "
                          "re-run the same command: it resumes from the last complete epoch") from None
        os.replace(tmp, self.state_path)

    def resume(self) -> tuple[int, int]:
        """(next epoch, global step) from the saved state, or (0, 0)."""
        tmp = self.state_path.with_name("state.pt.tmp")
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
            if state is None and weights_epoch is None:  # the first save never completed: start afresh
                return 0, 0
        if state is None or state["epoch"] != weights_epoch:
            raise ValueError(f"{self.state_path.parent}: weights (epoch {weights_epoch}) and optimizer state "
                             f"(epoch {None if state is None else state['epoch']}) do not match; start a new --out")
        if state["world"] != self.dist.world:
            raise ValueError(f"{self.state_path}: saved by {state['world']} process(es); resume with the same number "
                             f"(now {self.dist.world}) for an exact continuation")
        old = state.get("fingerprint")
        if old is not None and self.fingerprint is not None and old != self.fingerprint:
            diff = ", ".join(f"{k}: {old.get(k)} -> {self.fingerprint.get(k)}" for k in sorted(set(old) | set(self.fingerprint))
                             if old.get(k) != self.fingerprint.get(k))
            raise ValueError(f"{self.state_path}: the run started on other data or settings ({diff}); resuming would not "
                             "continue the same run: restore them, or start a new --out")
        self.model.load_state_dict(load_model(self.ckpt).state_dict())
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"][self.dist.rank])
        self.selection = state.get("selection")
        return state["epoch"] + 1, state["step"]


def data_fingerprint(datasets: dict[str, Any], backends: dict[str, str]) -> dict[str, Any]:
    """What a run trains on, for resume to compare: per dataset its sample count and a hash of
    its keys, labels, frame counts and shard file sizes; and the loader backends (DALI and the
    fallback draw different augmentations)."""
    import hashlib

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
    return out


def _read_state(path: Path) -> dict[str, Any]:
    """A ``state.pt`` read without executing anything (``weights_only``); any failure is one
    ValueError naming the file."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated, zero bytes, or not ours (a planted pickle is refused here)
        raise ValueError(f"{path}: unreadable as an s4d training state ({type(err).__name__}: "
                         f"{str(err).strip().splitlines()[0][:120] if str(err).strip() else 'no detail'})") from None
    if not isinstance(state, dict) or not {"epoch", "step", "world", "optimizer", "scheduler", "rng"} <= set(state):
        raise ValueError(f"{path}: not an s4d training state (keys missing)")
    return state


def _weights_epoch(ckpt: Path) -> int | None:
    meta = ckpt.with_suffix(".json")
    try:
        return json.loads(meta.read_text()).get("epoch")
    except (OSError, ValueError, AttributeError) as err:
        raise ValueError(f"{meta}: unreadable checkpoint metadata ({type(err).__name__}); start a new --out") from None


def write_config(out: Path, cfg: Any) -> None:
    """The resolved config beside the outputs; a re-run must use the same one to resume."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "config.json"
    new = json.loads(json.dumps(cfg.to_dict()))  # tuples as lists, as they are stored
    if path.is_file():
        old = json.loads(path.read_text())
        diff = sorted(k for k in set(old) | set(new) if k not in _NOT_IDENTITY and old.get(k) != new.get(k))
        if diff:
            raise ValueError(f"{path}: this run was started with different settings ({', '.join(diff)}); use a new --out")
    path.write_text(json.dumps(new, indent=2, sort_keys=True) + "\n")


# Where data lives and how it is loaded do not change what a run computes.
_NOT_IDENTITY = {"data_root", "backend", "device", "out", "loader_threads"}


_CRITICAL = {"inside": False, "pending": None}


def _stop_on_sigterm() -> None:
    """SIGTERM (a scheduler) and SIGINT (Ctrl-C) stop the run; the last finished epoch is on
    disk. A signal that arrives while an epoch is being saved is delivered right after the save."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        def handler(signum, frame):
            if _CRITICAL["inside"]:
                _CRITICAL["pending"] = signum
            else:
                raise KeyboardInterrupt(f"signal {signum}")

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)


@contextlib.contextmanager
def _uninterrupted():
    _CRITICAL["inside"] = True
    try:
        yield
    finally:
        _CRITICAL["inside"] = False
        if _CRITICAL["pending"] is not None:
            signum, _CRITICAL["pending"] = _CRITICAL["pending"], None
            raise KeyboardInterrupt(f"signal {signum}")


def _trim_metrics(path: Path, next_epoch: int) -> None:
    """Drop log lines of epochs that were not saved (a hard kill between log and save)."""
    if path.is_file():
        lines = [x for x in path.read_text().splitlines() if x and json.loads(x)["epoch"] < next_epoch]
        path.write_text("".join(x + "\n" for x in lines))


def progress(items, total: int, description: str, show: bool):
    """Iterate with a progress bar (steps, steps/s, ETA) on stderr; plain iteration if not shown."""
    if not show:
        yield from items
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TimeElapsedColumn, TimeRemainingColumn
    from rich.text import Text

    class Rate(ProgressColumn):
        def render(self, task) -> Text:
            return Text(f"{task.speed:.2f} steps/s" if task.speed else "")

    columns = ("{task.description}", BarColumn(), MofNCompleteColumn(), Rate(), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(description, total=total)
        for item in items:
            yield item
            bar.advance(task)


def start_run(cfg: Any, out: Path, log) -> tuple[Dist, torch.device, Any]:
    """Signals, process group, seeds; returns (dist, device, rank-aware log)."""
    _stop_on_sigterm()
    d, device = setup(cfg.device)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed + d.rank)  # Mixup's draws differ per rank
    random.seed(cfg.seed)
    return d, device, (log if d.main else (lambda *_: None))


def run_lock(out: Path, d: Dist):
    """The run folder, held by this run's rank 0 against a second process on the same --out."""
    return folder_lock(out, "this run folder") if d.main else contextlib.nullcontext()


def commit_config(cfg: Any, out: Path, d: Dist) -> None:
    """Write (or check) ``config.json`` once the run's inputs have been validated, so a failed
    start does not pin a folder to wrong settings."""
    if d.main:
        write_config(out, cfg)
    barrier(d)


def run_epochs(one_epoch, checkpointer: Checkpointer, out: Path, epochs: int, d: Dist, log, *, extra=None,
               stop_after_epochs: int | None = None, selector: Selector | None = None) -> bool:
    """Resume, then ``one_epoch(epoch, step) -> (EpochStats, step)`` per epoch, each saved with
    its log line (and, with a ``selector``, its score and a new best checkpoint) as one
    uninterruptible unit. Returns False if stopped early on purpose."""
    start, step = checkpointer.resume()
    for note in checkpointer.notes:
        log(note)
    if d.main:
        _trim_metrics(out / "metrics.jsonl", start)
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
        with _uninterrupted():
            checkpointer.save(epoch, step, extra, selection=selector.state() if selector else None)
            if selector is not None and selector.improved:
                selector.save_best(checkpointer.model, extra or {})
            if d.main:
                with open(out / "metrics.jsonl", "a") as fh:
                    fh.write(json.dumps(record) + "\n")
        barrier(d)
        log(f"epoch {epoch + 1}/{epochs}: loss {loss:.4f} ({stats.steps} steps per rank, {record['seconds']:.1f} s)"
            + (_selection_note(selector, record) if selector is not None else ""))
        if stop_after_epochs is not None and epoch + 1 - start >= stop_after_epochs and epoch + 1 < epochs:
            return False
    return True


def _selection_note(selector: Selector, record: dict[str, Any]) -> str:
    best = "none" if selector.epoch is None else selector.epoch + 1
    if selector.mode == "test":
        return f"; test top-1 (one random clip) {100 * record['test_one_clip_top1']:.2f}, best epoch {best} [{TEST_SELECTED}]"
    return f"; held-out UAR {100 * record['val_uar']:.2f} WAR {100 * record['val_war']:.2f}, best epoch {best}"


def train(cfg: TrainConfig, *, stop_after_epochs: int | None = None, log=print) -> dict[str, Any] | None:
    """Run (or resume) fine-tuning; returns the summary, or None if stopped early on purpose."""
    out = Path(cfg.out)
    d, device, log = start_run(cfg, out, log)
    with run_lock(out, d):
        return _train(cfg, out, d, device, log, stop_after_epochs)


def _train(cfg: TrainConfig, out: Path, d: Dist, device: torch.device, log, stop_after_epochs: int | None) -> dict[str, Any] | None:
    run = Run(cfg, d, device)
    commit_config(cfg, out, d)
    if run.val_ds is not None and d.main:
        record_holdout(out / "holdout.json", run.val_ds.keys, cfg.val_fraction, cfg.seed)
    if run.val_ds is not None:
        barrier(d)
        log(f"model selection: {len(run.val_ds)} of {len(run.val_ds) + len(run.train_ds)} training clips held out (holdout.json)")
    if run.init_report:
        log(run.init_report.summary())

    def one_epoch(epoch: int, step: int):
        batches = progress(run.batches(epoch), run.batches_per_epoch, f"epoch {epoch + 1}/{cfg.epochs}", d.main)
        return train_epoch(run.ddp, batches, run.optimizer, run.scheduler, step=step, mixers=run.mixers,
                           alpha=cfg.alpha, device=run.device, autocast_dtype=run.autocast, accum=cfg.accum)

    finished = run_epochs(one_epoch, run.checkpointer, out, cfg.epochs, d, log,
                          extra={"fold": run.fold, "manifest": run.manifest.name, "input": run.input_settings},
                          stop_after_epochs=stop_after_epochs, selector=run.selector)
    return evaluate_run(run, out, log) if finished else None


def input_settings(m: Manifest, folder: Path, keys: list[str]) -> dict[str, Any]:
    """How the training clips were made, recorded in the checkpoint so ``s4d predict`` prepares a
    raw video the same way: frame stride and the frame rate it was counted at (median over the
    training clips), stored crop, face alignment, margin and framing geometry."""
    import pyarrow.parquet as pq

    table = pq.read_table(folder / "index.parquet", columns=["key", "fps"]).to_pydict()
    wanted = set(keys)
    rates = [f for k, f in zip(table["key"], table["fps"]) if k in wanted and f > 0]
    return {"stride": m.clip.stride, "fps": float(np.median(rates)) if rates else None,
            "crop": list(m.clip.crop) if m.clip.crop else None, "align": m.preprocess.align, "margin": m.preprocess.margin,
            "geometry": m.preprocess.geometry, "stored_size": m.preprocess.size}


def evaluate_run(run: Run, out: Path, log=print) -> dict[str, Any]:
    """Test protocol on the fold's test set with the last epoch's weights and, with model
    selection, with the selected epoch's; rank 0 writes the outputs and every rank leaves only
    once they are on disk."""
    summary: dict[str, Any] = {}
    sel = run.selector
    if run.test_ds is None:
        summary = {"fold": run.fold, "epochs": run.cfg.epochs, "select": run.cfg.select, "note": "no test partition in this fold",
                   "selected": _selection_fields(run)}
        if run.dist.main:
            (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    else:
        test = Loader(run.test_ds, run.test_cfg, rank=run.dist.rank, world=run.dist.world, backend=run.cfg.backend,
                      device_id=run.device_id)
        last = pool(gather(predict(run.model, test.epoch(0), "video", run.device, run.autocast), run.dist))  # pool, never average
        best = None
        if sel is not None and sel.epoch is not None:
            if sel.epoch == run.cfg.epochs - 1:
                best = last
            else:
                run.model.load_state_dict(load_model(sel.path).state_dict())
                best = pool(gather(predict(run.model, test.epoch(0), "video", run.device, run.autocast), run.dist))
        if run.dist.main:
            summary = _write_test_outputs(run, out, last, best, log)
    barrier(run.dist)
    return summary


def _selection_fields(run: Run) -> dict[str, Any]:
    sel = run.selector
    if sel is None:
        return {"epoch": run.cfg.epochs - 1, "selected_on": LAST}
    return {"epoch": sel.epoch, "selected_on": sel.label(), "metric": sel.metric,
            "score": sel.score if sel.epoch is not None else None}


def _score_fields(pred: dict, classes: tuple[str, ...]) -> dict[str, Any]:
    s = scores(pred["labels"], pred["probs"].argmax(1), len(classes))
    return {"uar": s["uar"], "war": s["war"], "recall": dict(zip(classes, s["recall"])), "confusion": s["confusion"], "count": s["count"]}


def _write_test_outputs(run: Run, out: Path, last: dict, best: dict | None, log) -> dict[str, Any]:
    """``summary.json`` (the last epoch, with ``last`` and ``selected`` side by side),
    ``predictions.parquet`` and plots; the selected epoch's own in ``selected/``."""
    classes, name = run.manifest.classes, run.manifest.name
    write_predictions(out / "predictions.parquet", last, run.fold, classes)
    s = _score_fields(last, classes)
    chosen = _selection_fields(run)
    if run.selector is None:
        chosen.update(s)
    elif best is not None:
        chosen.update(_score_fields(best, classes))
        sub = out / "selected"
        sub.mkdir(exist_ok=True)
        write_predictions(sub / "predictions.parquet", best, run.fold, classes)
        full = {"fold": run.fold, "select": run.cfg.select, **chosen}
        (sub / "summary.json").write_text(json.dumps(full, indent=2) + "\n")
        plot_scores(sub, chosen["confusion"], chosen["recall"], chosen["uar"], f"{name} fold {run.fold}, {_short_label(run)}")
    summary = {"fold": run.fold, "select": run.cfg.select, "epoch": run.cfg.epochs - 1, "selected_on": LAST, **s,
               "last": {"epoch": run.cfg.epochs - 1, "uar": s["uar"], "war": s["war"], "count": s["count"]},
               "selected": {k: v for k, v in chosen.items() if k not in ("recall", "confusion")}}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot_scores(out, s["confusion"], summary["recall"], s["uar"], f"{name} fold {run.fold}")
    log(f"test ({s['count']} videos), last epoch: UAR {100 * s['uar']:.2f}  WAR {100 * s['war']:.2f}")
    if run.selector is not None and best is not None:
        log(f"test, selected epoch {chosen['epoch'] + 1} [{_short_label(run)}]: "
            f"UAR {100 * chosen['uar']:.2f}  WAR {100 * chosen['war']:.2f}")
    return summary


def _short_label(run: Run) -> str:
    return {"val": f"val-selected ({run.selector.metric.upper()} on a held-out {run.cfg.val_fraction:.0%})",
            "test": TEST_SELECTED}.get(run.cfg.select, "last epoch")


def write_predictions(path: Path, pred: dict, fold: str, classes: tuple[str, ...]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = {"key": pred["keys"], "fold": [fold] * len(pred["keys"]), "label": pred["labels"].tolist()}
    for c, name in enumerate(classes):
        columns[f"p_{name}"] = pred["probs"][:, c].tolist()
    pq.write_table(pa.table(columns), path)


def cross_validate(cfg: TrainConfig, log=print) -> dict[str, Any]:
    """Every fold of the manifest (resumable: finished folds are kept), then the paper's
    protocol: predictions of all folds pooled into one UAR/WAR, plus per-fold mean and std, for
    the last epochs and (``select`` val/test) for the selected checkpoints, side by side."""
    m = load_manifest(cfg.manifest)
    out = Path(cfg.out)
    d, _ = setup(cfg.device)
    log = log if d.main else (lambda *_: None)
    commit_config(dataclasses.replace(cfg, fold=None), out, d)  # kept folds must come from the same settings
    per_fold = {}
    for fold in m.folds:
        fold_out = out / f"fold_{fold}"
        if (fold_out / "summary.json").is_file():
            log(f"fold {fold}: done before, kept")
        else:
            log(f"fold {fold}: training")
            train(dataclasses.replace(cfg, fold=fold, out=str(fold_out)), log=log)
        per_fold[fold] = json.loads((fold_out / "summary.json").read_text())
    if not d.main:
        return {}
    last = _pool_folds(out, m, "predictions.parquet", {f: per_fold[f] for f in m.folds})
    summary = {"manifest": m.name, "protocol": "predictions of all folds pooled", "select": cfg.select,
               "selected_on": "last epoch of each fold", **last}
    plot_scores(out, last["confusion"], summary["recall"], last["uar"], f"{m.name}, {len(m.folds)} folds pooled")
    log(f"pooled over {len(m.folds)} folds ({last['count']} videos), last epochs: "
        f"UAR {100 * last['uar']:.2f}  WAR {100 * last['war']:.2f}; per fold UAR {100 * last['fold_mean']['uar']:.2f} +- {100 * last['fold_std']['uar']:.2f}")
    if cfg.select == "last":
        summary["selected"] = {"selected_on": "last epoch of each fold", **{k: last[k] for k in ("uar", "war", "count")}}
    else:
        chosen = _pool_folds(out, m, "selected/predictions.parquet", {f: per_fold[f]["selected"] for f in m.folds})
        label = _cv_label(cfg)
        for f in m.folds:
            chosen["folds"][f]["epoch"] = per_fold[f]["selected"]["epoch"]
        summary["selected"] = {"selected_on": label, **chosen}
        (out / "selected").mkdir(exist_ok=True)
        (out / "selected" / "summary.json").write_text(json.dumps({"manifest": m.name, "protocol": summary["protocol"],
                                                                   "selected_on": label, **chosen}, indent=2) + "\n")
        plot_scores(out / "selected", chosen["confusion"], chosen["recall"], chosen["uar"],
                    f"{m.name}, {len(m.folds)} folds pooled, selected")
        log(f"pooled over {len(m.folds)} folds, selected checkpoints [{label}]: "
            f"UAR {100 * chosen['uar']:.2f}  WAR {100 * chosen['war']:.2f}")
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _cv_label(cfg: TrainConfig) -> str:
    if cfg.select == "test":
        return f"{TEST_SELECTED}: per fold, best top-1 on its test split with one random clip per video, then the 2-clip test"
    return f"per fold, best {cfg.select_metric.upper()} on a held-out {cfg.val_fraction:.0%} of its training fold"


def _pool_folds(out: Path, m: Manifest, name: str, fold_scores: dict[str, dict]) -> dict[str, Any]:
    """Scores of the pooled predictions ``fold_<f>/<name>`` of every fold, with per-fold scores."""
    import pyarrow.parquet as pq

    tables = [pq.read_table(out / f"fold_{f}" / name).to_pydict() for f in fold_scores]
    labels = np.concatenate([t["label"] for t in tables])
    probs = np.concatenate([np.stack([t[f"p_{c}"] for c in m.classes], axis=1) for t in tables])
    keys = [k for t in tables for k in t["key"]]
    if len(set(keys)) != len(keys):
        raise ValueError("a video was tested in more than one fold: the folds overlap")
    pooled = scores(labels, probs.argmax(1), len(m.classes))
    uars = [s["uar"] for s in fold_scores.values()]
    wars = [s["war"] for s in fold_scores.values()]
    return {
        "uar": pooled["uar"], "war": pooled["war"], "count": pooled["count"],
        "recall": dict(zip(m.classes, pooled["recall"])), "confusion": pooled["confusion"],
        "folds": {f: {"uar": s["uar"], "war": s["war"], "count": s["count"]} for f, s in fold_scores.items()},
        "fold_mean": {"uar": float(np.mean(uars)), "war": float(np.mean(wars))},
        "fold_std": {"uar": float(np.std(uars)), "war": float(np.std(wars))},
    }
