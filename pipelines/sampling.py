"""Pure sampling rules shared by the DALI pipelines and the PyTorch fallback.

Everything here is a function of its arguments (seed, epoch, rank, world size): the two
backends, every rank and every re-run agree on which sample, which frames, in which order.
"""

from __future__ import annotations

import numpy as np


def train_start(num_frames: int, frames: int, stride: int, u: float) -> int:
    """Start of a random training window of ``frames * stride`` frames; ``u`` in [0, 1).
    Clips shorter than the window start at 0 (and repeat their last frame)."""
    slack = max(num_frames - frames * stride, 0)
    return min(int(u * (slack + 1)), slack)


def eval_starts(num_frames: int, frames: int, stride: int) -> tuple[int, int]:
    """The test protocol's two clips: the first and the last ``frames`` entries of the grid
    ``range(0, num_frames, stride)`` (as the reference test code samples them)."""
    grid = -(-num_frames // stride)  # len(range(0, num_frames, stride))
    return 0, stride * max(grid - frames, 0)


def clip_indices(start: int, num_frames: int, frames: int, stride: int) -> np.ndarray:
    """Frame indices of a clip: ``start + stride * i``, past the end repeats the last frame
    (DALI ``pad_mode="edge"`` does the same)."""
    return np.minimum(start + stride * np.arange(frames), num_frames - 1)


def _rng(seed: int, epoch: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, epoch, stream])


def epoch_order(
    labels: np.ndarray, *, seed: int, epoch: int, shuffle: bool, class_balanced: bool = False, num_samples: int | None = None
) -> np.ndarray:
    """Global sample order for one epoch (same on every rank).

    ``class_balanced`` draws ``num_samples`` (default: the dataset size) indices with
    replacement, each class equally likely (AffectNet in joint fine-tuning)."""
    n = len(labels)
    if class_balanced:
        rng = _rng(seed, epoch, 1)
        classes, counts = np.unique(labels, return_counts=True)
        weight = 1.0 / counts[np.searchsorted(classes, labels)]
        return rng.choice(n, size=num_samples or n, replace=True, p=weight / weight.sum())
    if num_samples is None or num_samples <= n:
        order = _rng(seed, epoch, 0).permutation(n) if shuffle else np.arange(n)
        return order if num_samples is None else order[:num_samples]
    rng = _rng(seed, epoch, 0)  # more than one pass: successive permutations, each sample once per pass
    passes = [rng.permutation(n) if shuffle else np.arange(n) for _ in range(-(-num_samples // n))]
    return np.concatenate(passes)[:num_samples]


def rank_slice(order: np.ndarray, rank: int, world: int, *, pad: bool) -> np.ndarray:
    """This rank's part of the epoch: positions ``rank, rank + world, ...``.

    Training (``pad=True``): the order is padded by repeating its start so every rank gets
    the same number of samples (a few samples are seen twice when ``len % world != 0``; this
    keeps DDP steps in lock-step). Evaluation (``pad=False``): no padding, ranks may differ by
    one sample, and the union over ranks is every sample exactly once."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} outside world size {world}")
    if pad and len(order) % world:
        extra = world - len(order) % world
        order = np.concatenate([order, np.resize(order, extra)])
    return order[rank::world]


def uniforms(seed: int, epoch: int, rank: int, count: int) -> np.ndarray:
    """Per-sample uniform draws in [0, 1) for clip starts, reproducible per (seed, epoch, rank)."""
    return _rng(seed, epoch, 1000 + rank).random(count)


def mixture_schedule(counts: dict[str, int], *, seed: int, epoch: int) -> list[str]:
    """Single-source batch order for one epoch: ``counts[name]`` batches of each source,
    randomly interleaved, identical on every rank."""
    names = np.array([name for name, n in counts.items() for _ in range(n)])
    return [str(x) for x in _rng(seed, epoch, 2).permutation(names)]


def joint_schedule(num_video_batches: int, num_image_batches: int, *, seed: int, epoch: int) -> list[str]:
    """Joint fine-tuning: all video batches and ``num_image_batches`` image batches."""
    return mixture_schedule({"video": num_video_batches, "image": num_image_batches}, seed=seed, epoch=epoch)
