"""``s4d pretrain``: dual-modal MAE pre-training on a mixture (``manifests/pretrain.json``).

Every step is single-source. Per epoch each source contributes ``share`` x the batches of one
pass over it (AffectNet x1, VoxCeleb2 x1/4 in the paper), in an order seeded by the epoch; a
video is decoded once and seen as ``repeat`` views (4 in the paper), each with its own
augmentation and its own mask. Batches per process as the reference: 48 clips x 4 views, or 192
images. Optimiser as the reference: AdamW (0.9, 0.95), weight decay 0.05 (none on biases and
LayerNorm parameters; q/v biases and the mask token are decayed), lr 1.6e-3 x batch / 512 with
batch = masked samples per video step (clips x views, all ranks; images per step if the run
has no video step), warm-up from 1e-6 over 5% of the steps, then cosine to 0. Outputs and resume as
``s4d train`` (``tensorboard/``: the reconstruction loss and lr per step, each epoch's line).
``--modality images|videos|both|frames`` and ``--image-share P`` choose the data (Table IV #2-#5,
Fig. 3c): ``pretrain_data.py``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Iterator

import torch

from pipelines.sampling import mixture_schedule
from preprocess.mixture import load_mixture, select_streams
from preprocess.safe_io import write_text
from preprocess.safe_json import dumps

from ..models import build_mae
from ..runtime import autocast_dtype, dali_device_id
from ..runtime.checkpointer import Checkpointer
from ..runtime.progress import size_to_machine
from ..runtime.rundir import commit_config, run_lock, start_run
from ..runtime.tracking import Tracker
from .config import PretrainConfig
from .cost import mae_cost, safely
from .epochs import run_epochs
from .loop import EpochStats, mae_loss, train_epoch
from .optim import build_mae_optimizer, build_scheduler
from .pretrain_data import build_pretrain_data, check_clip_frames, lr_batch  # noqa: F401  (lr_batch: re-exported)


def pretrain(cfg: PretrainConfig, *, stop_after_epochs: int | None = None, log=print) -> bool:
    out = Path(cfg.out)
    d, device, log = start_run(cfg, out, log)
    with run_lock(out, d):
        mixture = load_mixture(cfg.mixture)
        model = build_mae(cfg.size).to(device)
        amp = autocast_dtype(cfg.amp, device)
        device_id = dali_device_id(device)
        enc = model.config.encoder
        # the wrap broadcasts rank 0's initial weights: the ranks seeded apart (start_run) built different ones
        ddp = torch.nn.parallel.DistributedDataParallel(model, broadcast_buffers=False) if d.active else model  # fixed buffers only
        check_clip_frames(select_streams(mixture, cfg.modality, cfg.image_share), cfg.size, enc.num_frames)
        data = build_pretrain_data(cfg, mixture, img_size=enc.img_size, rank=d.rank, world=d.world, device_id=device_id)
        loaders, counts = data.loaders, data.counts
        steps = sum(counts.values())
        optim_cfg = dataclasses.replace(cfg.optim, warmup_epochs=cfg.warmup_fraction * cfg.epochs)
        optimizer = build_mae_optimizer(model, optim_cfg, lr_batch(cfg, data.streams) * d.world)
        scheduler = build_scheduler(optimizer, optim_cfg, cfg.epochs, steps)
        commit_config(cfg, out, d)
        log(f"pre-training: {data.describe()}")
        log(size_to_machine(next(iter(loaders.values()))))

        def one_epoch(epoch: int, step: int) -> tuple[EpochStats, int]:
            iters: dict[str, Iterator[dict]] = {n: loader.epoch(epoch) for n, loader in loaders.items()}
            batches = ((name, next(iters[name])) for name in mixture_schedule(counts, seed=cfg.seed, epoch=epoch))
            return train_epoch(
                ddp, batches, optimizer, scheduler, step=step, loss_fn=mae_loss, on_step=tracker.step_logger(), device=device, autocast_dtype=amp
            )

        checkpointer = Checkpointer(out, model, optimizer, scheduler, d)
        tracker = Tracker(out if d.main else None, tensorboard=cfg.tensorboard, wandb_project=cfg.wandb, config=cfg.to_dict())
        try:
            finished = run_epochs(
                one_epoch,
                checkpointer,
                out,
                cfg.epochs,
                d,
                log,
                extra={"mixture": mixture.name},
                stop_after_epochs=stop_after_epochs,
                tracker=tracker,
            )
            if finished and d.main:  # the run's record: its counted cost (train.cost)
                cost = safely(lambda: mae_cost(model.config, cfg, data.streams, counts, d.world))
                write_text(out / "summary.json", dumps({"mixture": mixture.name, "epochs": cfg.epochs, "cost": cost}, indent=2) + "\n")
                log(f"cost: {cost['tflops']:.4g} TFLOPs ({cost['counted']})" if cost["tflops"] is not None else f"cost: {cost['counted']}")
            return finished
        finally:
            tracker.close()
