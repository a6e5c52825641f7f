"""``s4d pretrain``: dual-modal MAE pre-training on a mixture (``manifests/pretrain.json``).

Every step is single-source. Per epoch each source contributes ``share`` x the batches of one
pass over it (AffectNet x1, VoxCeleb2 x1/4 in the paper), in an order seeded by the epoch; a
video is decoded once and seen as ``repeat`` views (4 in the paper), each with its own
augmentation and its own mask. Batches per process as the reference: 48 clips x 4 views, or 192
images. Optimiser as the reference: AdamW (0.9, 0.95), weight decay 0.05 (none on biases and
LayerNorm parameters; q/v biases and the mask token are decayed), lr 1.6e-3 x batch / 512 with
batch = masked samples per video step (clips x views, all ranks; images per step if the mixture
has no video), warm-up from 1e-6 over 5% of the steps, then cosine to 0. Outputs and resume as
``s4d train`` (``tensorboard/``: the reconstruction loss and lr per step, each epoch's line).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Iterator

import torch

from pipelines import Augment, Loader, LoaderConfig, open_dataset
from pipelines.sampling import mixture_schedule
from preprocess.mixture import load_mixture

from ..models import build_mae
from ..runtime import autocast_dtype, dali_device_id
from ..runtime.checkpointer import Checkpointer
from ..runtime.progress import size_to_machine
from ..runtime.rundir import commit_config, run_lock, start_run
from ..runtime.tracking import Tracker
from .config import PretrainConfig
from .epochs import run_epochs
from .loop import EpochStats, mae_loss, train_epoch
from .optim import build_mae_optimizer, build_scheduler

# The reference's pre-training augmentation (DESIGN §4): clips random-resized crop (0.08, 1)
# without flip; images random-resized crop (0.2, 1), bicubic, flip. Masking does the rest.


def lr_batch(cfg: PretrainConfig, mixture) -> int:
    """Samples per step and process that the lr scales with: a video step holds video_batch x
    views masked clips (48 x 4 = 192 in the reference, as many as an image step); a mixture
    without videos counts images."""
    views = [s.repeat for s, m in zip(mixture.sources, mixture.manifests()) if m.modality == "video"]
    return cfg.video_batch * max(views) if views else cfg.image_batch


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
        loaders, counts = {}, {}
        for i, (source, m) in enumerate(zip(mixture.sources, mixture.manifests())):
            ds = open_dataset(m, m.shard_dir(cfg.data_root), None, "train")
            if not len(ds):
                raise ValueError(f"{m.source or m.name}: no training samples to pre-train on (mixture {mixture.name})")
            if m.modality == "video":
                lc = LoaderConfig(
                    batch_size=cfg.video_batch,
                    train=True,
                    size=enc.img_size,
                    frames=m.clip.frames,
                    stride=m.clip.stride,
                    crop=m.clip.crop,
                    augment=Augment.mae_video(),
                    views=source.repeat,
                    seed=cfg.seed + i,
                    num_threads=cfg.loader_threads,
                )
            else:
                lc = LoaderConfig(
                    batch_size=cfg.image_batch,
                    train=True,
                    size=enc.img_size,
                    image_resize=enc.img_size,
                    augment=Augment.mae_image(),
                    seed=cfg.seed + i,
                    num_threads=cfg.loader_threads,
                )
            loader = Loader(ds, lc, rank=d.rank, world=d.world, backend=cfg.backend, device_id=device_id)
            per_pass = len(loader.batches(0))
            counts[m.name] = max(1, round(source.share * per_pass))
            loader.num_samples = counts[m.name] * lc.batch_size * d.world  # exactly the batches the schedule takes
            loaders[m.name] = loader
        steps = sum(counts.values())
        optim_cfg = dataclasses.replace(cfg.optim, warmup_epochs=cfg.warmup_fraction * cfg.epochs)
        optimizer = build_mae_optimizer(model, optim_cfg, lr_batch(cfg, mixture) * d.world)
        scheduler = build_scheduler(optimizer, optim_cfg, cfg.epochs, steps)
        commit_config(cfg, out, d)
        log(f"pre-training: {', '.join(f'{n} {c} batches' for n, c in counts.items())} per epoch")
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
            return run_epochs(
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
        finally:
            tracker.close()
