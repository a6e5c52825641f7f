"""The per-rank batch plan of one epoch: which samples, and for clips which start frames."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import LoaderConfig
from .dataset import ShardDataset
from .sampling import epoch_order, eval_starts, rank_slice, train_start, uniforms


@dataclass(frozen=True)
class Batch:
    positions: np.ndarray  # (B,) indices into the dataset
    starts: np.ndarray | None  # clips: (B,) train start frames, (B, 2) the two test clips, (B, 1) one random test clip; images: None


def epoch_batches(ds: ShardDataset, cfg: LoaderConfig, *, epoch: int, rank: int = 0, world: int = 1, num_samples: int | None = None) -> list[Batch]:
    order = epoch_order(
        ds.labels,
        seed=cfg.seed,
        epoch=epoch,
        shuffle=cfg.train,
        class_balanced=cfg.class_balanced and cfg.train,
        num_samples=num_samples,
    )
    mine = rank_slice(order, rank, world, pad=cfg.train)
    starts = None
    if ds.modality == "video":
        if cfg.train:
            u = uniforms(cfg.seed, epoch, rank, len(mine))
            starts = np.asarray([train_start(int(ds.frames[i]), cfg.frames, cfg.stride, x) for i, x in zip(mine, u)], dtype=np.int32)
        elif cfg.random_clip:  # one random window per video, drawn for the whole set (rank -1): the same on any world size
            u = uniforms(cfg.seed, epoch, -1, len(ds))[mine]
            starts = np.asarray([train_start(int(ds.frames[i]), cfg.frames, cfg.stride, u[j]) for j, i in enumerate(mine)], dtype=np.int32).reshape(
                -1, 1
            )
        else:
            starts = np.asarray([eval_starts(int(ds.frames[i]), cfg.frames, cfg.stride) for i in mine], dtype=np.int32).reshape(-1, 2)
    return [
        Batch(mine[i : i + cfg.batch_size], None if starts is None else starts[i : i + cfg.batch_size]) for i in range(0, len(mine), cfg.batch_size)
    ]
