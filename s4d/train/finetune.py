"""``s4d train``: joint fine-tuning on a manifest's fold, with outputs and exact resume.

A run directory holds ``config.json`` (the resolved config), ``checkpoints/last.safetensors``
(+ ``.json``) and ``checkpoints/state.pt`` (optimizer, scheduler, RNG states, epoch, step),
``metrics.jsonl`` (one line per epoch), and at the end ``predictions.parquet``,
``confusion.png`` and ``summary.json`` (the last epoch; ``report``), and ``tensorboard/`` (and,
with ``wandb``, ``wandb/``: ``runtime.tracking``; per step the loss and lr, per epoch its
metrics line and the experts' mean gates, at the end the test scores and figures). With ``select`` val or test
(``select``) also ``checkpoints/best.safetensors``, ``selected/`` (its predictions, plots and
summary) and, for val, ``holdout.json``; ``summary.json`` reports last and selected side by side.
Re-running the same command continues from the last finished epoch; the data order and
augmentation are pure functions of (seed, epoch), and the RNG states are restored, so a resumed
run ends with the same weights as an uninterrupted one (and the same best checkpoint).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipelines import Augment, JointLoader, Loader, LoaderConfig, open_dataset
from pipelines.mixing import BatchMixer
from preprocess.manifest import Manifest, ManifestError, load_manifest, load_sfer
from preprocess.shards.folder import read_index

from ..checkpoint import init_from_pretrained
from ..eval.data import shard_folder
from ..models import build_model, model_config
from ..runtime import autocast_dtype, dali_device_id, resolve_device
from ..runtime.checkpointer import Checkpointer, data_fingerprint
from ..runtime.dist import Dist, barrier
from ..runtime.progress import progress, size_to_machine
from ..runtime.rundir import commit_config, run_lock, start_run
from ..runtime.tracking import Tracker
from .config import TrainConfig
from .epochs import run_epochs
from .loop import GateMeter, LossFn, classification_loss, train_epoch
from .optim import build_optimizer, build_scheduler
from .report import evaluate_run
from .select import Selector, holdout_split, record_holdout


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
        self.fold = m.fold_name(cfg.fold)
        folder = shard_folder(m, cfg.data_root, cfg.manifest)
        self.train_ds = open_dataset(m, folder, self.fold, "train")
        if not len(self.train_ds):
            raise ManifestError(
                f"{m.source or m.name}: fold {self.fold} has no training samples (partitions "
                f"{', '.join(m.folds[self.fold].train) or 'none'}); s4d eval scores a model on evaluation-only data"
            )
        self.test_ds = open_dataset(m, folder, self.fold, "test") if m.folds[self.fold].test else None
        self.val_ds = None
        if cfg.select == "val":  # held out of the training fold: never trained on
            kept, held = holdout_split(self.train_ds.labels, cfg.val_fraction, cfg.seed)
            if not len(held):
                raise ValueError(f"val_fraction {cfg.val_fraction}: fold {self.fold} has no class with 2 or more training clips to hold out")
            self.train_ds, self.val_ds = self.train_ds.subset(kept), self.train_ds.subset(held)
        if cfg.select == "test" and self.test_ds is None:
            raise ValueError(f"select test: fold {self.fold} of {m.name} has no test partition")
        self.input_settings = input_settings(m, folder, self.train_ds.keys)

        names = {"video": m.classes}
        sfer = load_sfer(m) if cfg.sfer else None
        if sfer is not None:
            names["image"] = sfer.classes
        model_cfg = model_config(
            cfg.variant,
            cfg.size,
            video_classes=len(m.classes),
            image_classes=len(sfer.classes) if sfer else 7,
            moe_count=cfg.moae_layers,
            moe_position=cfg.moae_position,
            num_experts=cfg.experts,
            top_k=cfg.top_k,
        )
        model_cfg = dataclasses.replace(model_cfg, class_names={t: names[t] for t in model_cfg.heads if t in names})
        self.model = build_model(model_cfg)  # class names travel in the checkpoint's config
        enc = self.model.config.encoder
        if m.clip.frames != enc.num_frames:
            raise ManifestError(f"{m.source}: clip.frames is {m.clip.frames} but the {cfg.size} model takes {enc.num_frames} frames")
        self.init_report = init_from_pretrained(self.model, cfg.init) if cfg.init else None
        self.model.to(self.device)
        # DDP: every parameter takes part in every step (IdleHeads), so DDP need not search the
        # graph for unused ones; the wrap broadcasts rank 0's initial weights to every rank
        self.ddp = (
            torch.nn.parallel.DistributedDataParallel(
                self.model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=False,
                broadcast_buffers=False,
            )
            if self.dist.active
            else self.model
        )  # the only buffers are fixed position tables
        self.idle_heads = IdleHeads(self.model.head) if self.dist.active and len(self.model.head) > 1 else None

        aug = Augment() if cfg.augment else Augment.off()
        self.video_cfg = LoaderConfig(
            batch_size=cfg.video_batch,
            train=True,
            size=enc.img_size,
            frames=m.clip.frames,
            stride=m.clip.stride,
            crop=m.clip.crop,
            augment=aug,
            seed=cfg.seed,
            num_threads=cfg.loader_threads,
        )
        self.test_cfg = dataclasses.replace(self.video_cfg, train=False, augment=Augment.off())
        rank, world = self.dist.rank, self.dist.world
        self.device_id = dali_device_id(self.device)  # DALI decodes where we train
        self.video = Loader(self.train_ds, self.video_cfg, rank=rank, world=world, backend=cfg.backend, device_id=self.device_id)
        self.joint = None
        if sfer is not None and "image" in self.model.head:
            image_ds = open_dataset(sfer, sfer.shard_dir(cfg.data_root), None, "train")
            image_cfg = LoaderConfig(
                batch_size=cfg.image_batch,
                train=True,
                size=enc.img_size,
                class_balanced=True,
                augment=Augment.image() if cfg.augment else Augment.off(),
                seed=cfg.seed + 1,
                num_threads=cfg.loader_threads,
            )
            proportion = m.sfer.proportion if cfg.proportion is None else cfg.proportion
            images = Loader(image_ds, image_cfg, rank=rank, world=world, backend=cfg.backend, device_id=self.device_id)
            self.joint = JointLoader(self.video, images, proportion, seed=cfg.seed)
        self.mixers = {task: BatchMixer(n, cfg.mixup, cfg.cutmix, cfg.smoothing) for task, n in self.model.config.heads.items()}
        batches = len(self.joint.schedule(0)) if self.joint else len(self.video.batches(0))
        steps = -(-batches // cfg.accum)  # optimiser steps per epoch
        self.optimizer = build_optimizer(self.model, cfg.optim, global_batch=cfg.video_batch * world * cfg.accum)
        if self.idle_heads is not None:
            self.optimizer.register_step_pre_hook(self.idle_heads.before_step)
        self.scheduler = build_scheduler(self.optimizer, cfg.optim, cfg.epochs, steps, global_batch=cfg.video_batch * world * cfg.accum)
        self.checkpointer = Checkpointer(self.out, self.model, self.optimizer, self.scheduler, self.dist)
        loaders = {"train": self.video, **({"images": self.joint.image} if self.joint else {})}
        self.checkpointer.fingerprint = data_fingerprint({k: v.ds for k, v in loaders.items()}, {k: v.backend for k, v in loaders.items()})
        self.autocast = autocast_dtype(cfg.amp, self.device)
        self.batches_per_epoch = batches
        self.selector = None
        if cfg.select != "last":
            ds, sel_cfg = (
                (self.val_ds, self.test_cfg)
                if cfg.select == "val"  # test: one random clip per video, as the authors
                else (self.test_ds, dataclasses.replace(self.test_cfg, random_clip=True))
            )
            loader = Loader(ds, sel_cfg, rank=rank, world=world, backend=cfg.backend, device_id=self.device_id)
            self.selector = Selector(
                cfg.select, cfg.select_metric, loader, len(m.classes), self.out, self.dist, self.device, self.autocast, fraction=cfg.val_fraction
            )
        if cfg.compile:
            self.ddp = torch.compile(self.ddp)

    def batches(self, epoch: int):
        return self.joint.epoch(epoch) if self.joint else (("video", b) for b in self.video.epoch(epoch))

    def loss_fn(self, gates: GateMeter | None) -> LossFn:
        loss = classification_loss(self.mixers, self.cfg.alpha, gates)
        return self.idle_heads.touch(loss) if self.idle_heads is not None else loss


class IdleHeads:
    """DDP without ``find_unused_parameters``: each step touches the heads its single-source
    batch does not use at zero weight, and the optimizer step drops their (zero) gradients.

    Why: with ``find_unused_parameters=True`` DDP walks the autograd graph after every forward,
    and, whenever a parameter is unused on a rank (one head is, in every step), its reducer waits
    for the all-reduced map of used parameters and copies it to the host in blocking: on a GPU a
    host sync per step (``finalize_bucket_dense``; ``benchmarks/bench_ddp_unused.py`` measures the
    CPU side). ``0 * p.sum()`` gives each idle parameter an exact zero gradient, so every
    parameter takes part and DDP needs no search. Dropping those gradients before the step keeps
    AdamW from decaying the idle head and moving it on its momentum: the update of one process,
    where the idle head has no gradient, and of the reference (DDP leaves the gradient of a
    parameter unused on every rank unset). Which heads idled is the same on every rank, because
    the joint schedule is. The experts need nothing: each layer's are stacked in one parameter
    that every step uses, an expert that got no token receiving zeros."""

    def __init__(self, heads: torch.nn.ModuleDict) -> None:
        self.heads = heads
        self.used: set[str] = set()  # tasks of the batches since the last optimizer step

    def touch(self, loss_fn: LossFn) -> LossFn:
        def loss(model: torch.nn.Module, task: str, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            self.used.add(task)
            idle = [p for name, head in self.heads.items() if name != task for p in head.parameters()]
            return loss_fn(model, task, x, y) + 0.0 * sum(p.sum() for p in idle)

        return loss

    def before_step(self, optimizer: torch.optim.Optimizer, args, kwargs) -> None:
        """Optimizer step pre-hook: forget the gradients of heads no batch of this step used."""
        for name, head in self.heads.items():
            if name not in self.used:
                for p in head.parameters():
                    p.grad = None
        self.used.clear()


def train(cfg: TrainConfig, *, stop_after_epochs: int | None = None, log=print) -> dict[str, Any] | None:
    """Run (or resume) fine-tuning; returns the summary, or None if stopped early on purpose."""
    out = Path(cfg.out)
    d, device, log = start_run(cfg, out, log)
    with run_lock(out, d):
        run = Run(cfg, d, device)
        commit_config(cfg, out, d)
        if run.val_ds is not None and d.main:
            record_holdout(out / "holdout.json", run.val_ds.keys, cfg.val_fraction, cfg.seed)
        if run.val_ds is not None:
            barrier(d)
            log(f"model selection: {len(run.val_ds)} of {len(run.val_ds) + len(run.train_ds)} training clips held out (holdout.json)")
        if run.init_report:
            log(run.init_report.summary())
        log(size_to_machine(run.video))
        tracker = Tracker(out if d.main else None, tensorboard=cfg.tensorboard, wandb_project=cfg.wandb, config=cfg.to_dict())
        gates = GateMeter() if d.main and run.model.config.moae is not None else None

        def one_epoch(epoch: int, step: int):
            batches = progress(run.batches(epoch), run.batches_per_epoch, f"epoch {epoch + 1}/{cfg.epochs}", d.main)
            stats, step = train_epoch(
                run.ddp,
                batches,
                run.optimizer,
                run.scheduler,
                step=step,
                loss_fn=run.loss_fn(gates),
                on_step=tracker.step_logger(),
                device=run.device,
                autocast_dtype=run.autocast,
                accum=cfg.accum,
            )
            if gates is not None:
                track_gates(tracker, gates.take(), list(run.model.config.moae.blocks), f"epoch {epoch + 1}", step)
            return stats, step

        try:
            finished = run_epochs(
                one_epoch,
                run.checkpointer,
                out,
                cfg.epochs,
                d,
                log,
                extra={"fold": run.fold, "manifest": run.manifest.name, "input": run.input_settings},
                stop_after_epochs=stop_after_epochs,
                selector=run.selector,
                tracker=tracker,
            )
            if not finished:
                return None
            summary = evaluate_run(run, out, log)
            track_test(tracker, out, summary)
            return summary
        finally:
            tracker.close()


def track_gates(tracker: Tracker, by_task: dict[str, np.ndarray], layers: list[int], title: str, step: int) -> None:
    """The epoch's mean gate weight of every expert, per task, as a figure (the paper's Fig. 5)."""
    if not tracker.active or not by_task:
        return
    import tempfile

    from ..plots import plot_experts

    with tempfile.TemporaryDirectory() as tmp:
        tracker.figure("experts/mean_gate", plot_experts(Path(tmp) / "experts.png", layers, by_task, f"mean gate weight, {title}"), step)


def track_test(tracker: Tracker, out: Path, summary: dict[str, Any]) -> None:
    """The test scores (last epoch, and the selected checkpoint) and their confusion matrices."""
    if not tracker.active or "uar" not in summary:
        return
    step = tracker.last_step
    values = {"test/uar": summary["uar"], "test/war": summary["war"]}
    if "uar" in summary.get("selected", {}) and summary.get("select", "last") != "last":
        values.update({"test/selected_uar": summary["selected"]["uar"], "test/selected_war": summary["selected"]["war"]})
    tracker.scalars(values, step)
    for tag, png in (("test/confusion", out / "confusion.png"), ("test/selected_confusion", out / "selected" / "confusion.png")):
        if png.is_file():
            tracker.figure(tag, png, step)


def input_settings(m: Manifest, folder: Path, keys: list[str]) -> dict[str, Any]:
    """How the training clips were made, recorded in the checkpoint so ``s4d predict`` prepares a
    raw video the same way: frame stride and the frame rate it was counted at (median over the
    training clips), stored crop, face alignment, margin and framing geometry."""
    table = read_index(folder, ["key", "fps"])
    wanted = set(keys)
    rates = [f for k, f in zip(table["key"], table["fps"]) if k in wanted and f > 0]
    return {
        "stride": m.clip.stride,
        "fps": float(np.median(rates)) if rates else None,
        "crop": list(m.clip.crop) if m.clip.crop else None,
        "align": m.preprocess.align,
        "margin": m.preprocess.margin,
        "geometry": m.preprocess.geometry,
        "stored_size": m.preprocess.size,
    }
