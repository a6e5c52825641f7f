"""One fold-role of a preprocessed dataset: which samples, their labels and frame counts."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from preprocess.errors import InputError
from preprocess.manifest import Manifest, ManifestError
from preprocess.shards.encoding import component_ext
from preprocess.shards.folder import read_index
from preprocess.shards.reader import ShardReader
from preprocess.shards.verify import spot_check, verify_shards


@dataclass
class ShardDataset:
    manifest: Manifest
    keys: list[str]
    labels: np.ndarray  # int64
    frames: np.ndarray  # int64 frames per sample (1 for images)
    reader: ShardReader

    @property
    def modality(self) -> str:
        return self.manifest.modality

    def __len__(self) -> int:
        return len(self.keys)

    def sample(self, limit: int, seed: int = 0) -> ShardDataset:
        """At most ``limit`` samples drawn without replacement (key order kept), for analyses
        that need a representative part, not the whole set."""
        if limit >= len(self):
            return self
        keep = np.sort(np.random.default_rng(seed).choice(len(self), limit, replace=False))
        return ShardDataset(self.manifest, [self.keys[i] for i in keep], self.labels[keep], self.frames[keep], self.reader)

    def subset(self, positions: np.ndarray) -> ShardDataset:
        """The samples at ``positions`` (in that order), same shards."""
        positions = np.asarray(positions, dtype=np.int64)
        return ShardDataset(self.manifest, [self.keys[i] for i in positions], self.labels[positions], self.frames[positions], self.reader)

    @property
    def media_ext(self) -> str:
        return component_ext(self.manifest.preprocess.codec)


def open_dataset(manifest: Manifest, folder: str | os.PathLike, fold: str | None = None, role: str = "train") -> ShardDataset:
    """Samples of ``role`` (train/test/val) in ``fold`` (default: the manifest's first fold),
    sorted by key. The shards are checked against ``shards.json`` first (``verify_shards``'s
    cheap checks: every listed tar present with its recorded size), then a few records per
    shard against ``index.parquet`` (``spot_check``)."""
    folder = Path(folder)
    summary = verify_shards(manifest, folder)
    fold = manifest.fold_name(fold)
    if role not in ("train", "test", "val"):
        raise InputError(f"role must be train, test or val, got {role!r}")
    partitions = set(getattr(manifest.folds[fold], role))
    table = read_index(folder, ["key", "shard", "partition", "label", "frames"])
    rows = sorted(
        (k, s, lab, fr)
        for k, s, p, lab, fr in zip(table["key"], table["shard"], table["partition"], table["label"], table["frames"])
        if p in partitions
    )
    shards = sorted({s for _, s, _, _ in rows})
    listed = {s["file"] for s in summary["shards"]}
    missing = sorted(set(shards) - listed)
    if missing:
        raise ManifestError(f"{folder}: index.parquet names shards not in shards.json: {missing[:3]}")
    reader = ShardReader([folder / s for s in shards])
    spot_check(folder / "index.parquet", reader, rows, len(manifest.classes))  # labels swapped in index.parquet stop here, cheaply
    return ShardDataset(
        manifest,
        [r[0] for r in rows],
        np.asarray([r[2] for r in rows], dtype=np.int64),
        np.asarray([r[3] for r in rows], dtype=np.int64),
        reader,
    )
