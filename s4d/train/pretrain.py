"""``s4d pretrain``: dual-modal MAE pre-training on a mixture (``manifests/pretrain.json``).

Every step is single-source. Per epoch each source contributes ``share`` x the batches of one
pass over it (AffectNet x1, VoxCeleb2 x1/4 in the paper), in an order seeded by the epoch; a
video is decoded once and seen as ``repeat`` views (4 in the paper), each with its own
augmentation and its own mask. Optimiser as the reference: AdamW (0.9, 0.95), weight decay
0.05, lr 1.6e-3 x batch / 512 with batch = masked samples per step (clips x views, all ranks),
5% of the epochs warm-up, then cosine. Outputs and resume as ``s4d train``.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch

from pipelines import Augment, Loader, LoaderConfig, open_dataset
from pipelines.sampling import mixture_schedule
from preprocess.manifest import load_mixture

from ..models import build_mae
from .finetune import Checkpointer, autocast_dtype, commit_config, run_epochs, start_run
from .loop import EpochStats, NonFiniteLoss
from .optim import OptimConfig, build_scheduler

# Pre-training augmentation: crops and flips only (masking is the main regulariser).
PRETRAIN_AUGMENT = Augment(rand_n=0, rand_m=0, rrc_scale=(0.5, 1.0), erase=0.0)


@dataclass(frozen=True)
class PretrainConfig:
    mixture: str
    out: str
    size: str = "base"
    epochs: int = 100
    video_batch: int = 16  # clips per step (each seen as ``repeat`` views)
    image_batch: int = 64
    data_root: str | None = None
    seed: int = 0
    backend: str = "auto"
    device: str = "auto"
    amp: str = "auto"
    warmup_fraction: float = 0.05  # of all epochs (the reference's 5%)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(base_lr=1.6e-3, reference_batch=512, weight_decay=0.05,
                                                                   layer_decay=1.0, betas=(0.9, 0.95)))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _mae_optimizer(model: torch.nn.Module, cfg: OptimConfig, batch: int) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim <= 1 or name.endswith(".bias") or name == "mask_token" else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr(batch), betas=cfg.betas)


def pretrain(cfg: PretrainConfig, *, stop_after_epochs: int | None = None, log=print) -> bool:
    out = Path(cfg.out)
    d, device, log = start_run(cfg, out, log)
    mixture = load_mixture(cfg.mixture)
    model = build_mae(cfg.size).to(device)
    amp = autocast_dtype(cfg.amp, device)
    device_id = device.index if device.type == "cuda" else None
    enc = model.config.encoder
    ddp = torch.nn.parallel.DistributedDataParallel(model) if d.active else model
    loaders, counts = {}, {}
    for i, (source, m) in enumerate(zip(mixture.sources, mixture.manifests())):
        ds = open_dataset(m, m.shard_dir(cfg.data_root), None, "train")
        if m.modality == "video":
            lc = LoaderConfig(batch_size=cfg.video_batch, train=True, size=enc.img_size, frames=m.clip.frames, stride=m.clip.stride,
                              crop=m.clip.crop, augment=PRETRAIN_AUGMENT, views=source.repeat, seed=cfg.seed + i)
        else:
            lc = LoaderConfig(batch_size=cfg.image_batch, train=True, size=enc.img_size, image_resize=enc.img_size,
                              augment=PRETRAIN_AUGMENT, seed=cfg.seed + i)
        loader = Loader(ds, lc, rank=d.rank, world=d.world, backend=cfg.backend, device_id=device_id)
        per_pass = len(loader.batches(0))
        counts[m.name] = max(1, round(source.share * per_pass))
        loader.num_samples = counts[m.name] * lc.batch_size * d.world  # exactly the batches the schedule takes
        loaders[m.name] = loader
    steps = sum(counts.values())
    # lr scales with the samples per step: a video step holds video_batch x views masked clips
    views = max((s.repeat for s, m in zip(mixture.sources, mixture.manifests()) if m.modality == "video"), default=1)
    optim_cfg = dataclasses.replace(cfg.optim, warmup_epochs=cfg.warmup_fraction * cfg.epochs)
    optimizer = _mae_optimizer(model, optim_cfg, cfg.video_batch * views * d.world)
    scheduler = build_scheduler(optimizer, optim_cfg, cfg.epochs, steps)
    commit_config(cfg, out, d)
    log(f"pre-training: {', '.join(f'{n} {c} batches' for n, c in counts.items())} per epoch")

    def one_epoch(epoch: int, step: int) -> tuple[EpochStats, int]:
        ddp.train()
        iters: dict[str, Iterator[dict]] = {n: loader.epoch(epoch) for n, loader in loaders.items()}
        total, n = torch.zeros((), device=device), 0
        check_every = 1 if device.type == "cpu" else 25  # host syncs only now and then on a GPU
        for name in mixture_schedule(counts, seed=cfg.seed, epoch=epoch):
            x = next(iters[name])["pixels"].to(device)
            if x.ndim == 6:  # (B, views, 3, T, H, W): every view gets its own mask
                x = x.flatten(0, 1)
            with torch.autocast(device.type, dtype=amp) if amp else contextlib.nullcontext():
                loss = ddp(x).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            scheduler.step_update(step)
            total += loss.detach()
            n += 1
            if n % check_every == 0 and not torch.isfinite(total):
                raise NonFiniteLoss(f"MAE loss became NaN/inf by step {step} (last batch: {name})")
        if not torch.isfinite(total):
            raise NonFiniteLoss(f"MAE loss became NaN/inf by step {step}")
        return EpochStats(n, float(total) / max(n, 1)), step

    checkpointer = Checkpointer(out, model, optimizer, scheduler, d)
    return run_epochs(one_epoch, checkpointer, out, cfg.epochs, d, log, extra={"mixture": mixture.name},
                      stop_after_epochs=stop_after_epochs)
