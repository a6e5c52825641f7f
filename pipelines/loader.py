"""Loaders: one epoch of batches from a ``ShardDataset``, on DALI or the PyTorch fallback.

Batches are dicts: ``pixels`` (train clips (B,3,T,H,W), or (B,V,3,T,H,W) with ``views`` V > 1;
test clips (B,2,3,T,H,W), the first and last clip of each video, or (B,1,3,T,H,W) with ``random_clip``; images (B,3,H,W)),
``labels`` (B,) int64 and ``keys``.
"""

from __future__ import annotations

import sys
import warnings
from typing import Iterator

import numpy as np
import torch

from .augment import BatchAugment, epoch_generator
from .config import LoaderConfig
from .dataset import ShardDataset
from .plan import Batch, epoch_batches
from .reader import ShardError

_NOTICE_SHOWN = False


def dali_available() -> bool:
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_backend(backend: str) -> str:
    global _NOTICE_SHOWN
    if backend == "auto":
        if dali_available():
            return "dali"
        if not _NOTICE_SHOWN:
            print("s4d: NVIDIA DALI is not installed here; using the PyTorch loader (same batches, slower).", file=sys.stderr)
            _NOTICE_SHOWN = True
        return "torch"
    if backend not in ("dali", "torch"):
        raise ValueError(f"backend must be auto, dali or torch, got {backend!r}")
    if backend == "dali" and not dali_available():
        raise ValueError("backend 'dali' requested but nvidia-dali is not installed")
    return backend


class Loader:
    def __init__(
        self, ds: ShardDataset, cfg: LoaderConfig, *, rank: int = 0, world: int = 1, backend: str = "auto",
        device_id: int | None = None, num_samples: int | None = None,
    ) -> None:
        self.ds, self.cfg, self.rank, self.world = ds, cfg, rank, world
        self.backend = resolve_backend(backend)
        self.device_id = device_id
        self.num_samples = num_samples
        self.video = ds.modality == "video"
        self.augment = BatchAugment(cfg, self.video) if cfg.train else None
        self.aug_device = torch.device("cuda", device_id) if device_id is not None else torch.device("cpu")
        self._pipe = None
        self._pipe_seed: int | None = None
        self._pending: Iterator[Batch] = iter(())

    def batches(self, epoch: int) -> list[Batch]:
        return epoch_batches(self.ds, self.cfg, epoch=epoch, rank=self.rank, world=self.world, num_samples=self.num_samples)

    def __len__(self) -> int:
        return len(self.batches(0))

    def _bytes(self, pos: int) -> np.ndarray:
        key = self.ds.keys[pos]
        try:
            return self.ds.reader.get(key, self.ds.media_ext)
        except ShardError:
            raise
        except (OSError, ValueError) as err:
            loc = self.ds.reader.locations.get(key)
            shard = self.ds.reader.paths[loc.shard] if loc else "?"
            raise ShardError(f"{shard}: cannot read sample {key} ({err})") from None

    # ------------------------------------------------------------------ DALI
    def _dali_source(self):
        """Called by DALI (possibly ahead of the consumer): the next batch of the epoch."""
        batch = next(self._pending)  # StopIteration ends DALI's epoch
        data = [self._bytes(int(p)) for p in batch.positions]
        labels = [np.asarray(self.ds.labels[p], dtype=np.int64) for p in batch.positions]
        if not self.video:
            return data, labels
        starts = batch.starts.reshape(len(batch.positions), -1)
        s0 = [np.asarray(s[0], dtype=np.int32) for s in starts]
        if self.cfg.train:
            return data, s0, labels
        s1 = [np.asarray(s[-1], dtype=np.int32) for s in starts]
        return data, s0, s1, labels

    def _dali_epoch(self, batches: list[Batch], epoch: int) -> Iterator[dict]:
        from .dali_pipes import build_image_pipe, build_video_pipe

        self._pending = iter(batches)
        # DALI's random draws (the training image crop) are seeded per (seed, epoch, rank): ranks
        # differ, and a resumed run repeats exactly the epoch it resumes. Clip graphs and eval
        # draw nothing: one seed, one graph build.
        draws = self.cfg.train and not self.video
        seed = int(np.random.default_rng([self.cfg.seed, epoch, 4000 + self.rank]).integers(2**31)) if draws else self.cfg.seed
        if self._pipe is None or seed != self._pipe_seed:
            self._pipe_seed = seed
            self._pipe = (build_video_pipe(self.cfg, self._dali_source, self.ds.manifest.preprocess.size, self.device_id, seed)
                          if self.video else build_image_pipe(self.cfg, self._dali_source, self.device_id, seed))
            with warnings.catch_warnings():  # DALI's RandAugment uses deprecated aliases of its own ops
                warnings.simplefilter("ignore", DeprecationWarning)
                self._pipe.build()
        finished = False
        try:
            yield from self._dali_batches(batches)
            finished = True
        finally:
            if not finished:  # abandoned mid-epoch: DALI holds prefetched batches; start afresh
                self._pipe = None

    def _dali_batches(self, batches: list[Batch]) -> Iterator[dict]:
        for batch in batches:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DeprecationWarning)
                    outs = self._pipe.run()
            except RuntimeError as err:
                self._pipe = None  # a failed pipeline cannot continue; rebuild next epoch
                shards = sorted({str(self.ds.reader.paths[self.ds.reader.locations[self.ds.keys[p]].shard]) for p in batch.positions})
                raise ShardError(f"{', '.join(shards)}: decoding failed in DALI ({str(err).strip().splitlines()[0][:200]})") from None
            tensors = [_to_torch(o) for o in outs]  # train: uint8 (B,T,S,S,3) / (B,S,S,3)
            pixels = tensors[0] if self.cfg.train or not self.video else torch.stack(tensors[:2], dim=1)
            if self.video and not self.cfg.train and self.cfg.random_clip:  # the eval graph decodes the one start twice
                pixels = pixels[:, :1]
            yield {"pixels": pixels, "labels": tensors[-1].long().view(-1), "keys": [self.ds.keys[p] for p in batch.positions]}
        # drain: with prefetching DALI has already asked past the end; start the next epoch clean
        try:
            self._pipe.run()
        except StopIteration:
            pass
        self._pipe.reset()

    # ------------------------------------------------------------------ PyTorch
    def _torch_epoch(self, batches: list[Batch], epoch: int) -> Iterator[dict]:
        from .torch_fallback import TorchTransforms, decode_clip, decode_image
        from .sampling import clip_indices

        tf = TorchTransforms(self.cfg, self.video, self.ds.manifest.preprocess.size)
        gen_state = torch.get_rng_state()
        torch.manual_seed(int(np.random.default_rng([self.cfg.seed, epoch, 3000 + self.rank]).integers(2**31)))
        try:
            for batch in batches:
                items = []
                for j, p in enumerate(batch.positions):
                    data = self._bytes(int(p))
                    try:
                        if self.video:
                            n = int(self.ds.frames[p])
                            decoded = [decode_clip(data, clip_indices(int(s), n, self.cfg.frames, self.cfg.stride))
                                       for s in np.atleast_1d(batch.starts[j])]
                            if self.cfg.train:  # one decoded clip; BatchAugment makes the views
                                items.append(tf(decoded[0]))
                            else:
                                items.append(torch.stack([tf(d) for d in decoded]))
                        else:
                            items.append(tf(decode_image(data)))
                    except (ValueError, OSError) as err:
                        loc = self.ds.reader.locations[self.ds.keys[p]]
                        raise ShardError(f"{self.ds.reader.paths[loc.shard]}: sample {self.ds.keys[p]} does not decode ({err})") from None
                yield {"pixels": torch.stack(items), "labels": torch.as_tensor(self.ds.labels[batch.positions]),
                       "keys": [self.ds.keys[p] for p in batch.positions]}
        finally:
            torch.set_rng_state(gen_state)

    def epoch(self, epoch: int) -> Iterator[dict]:
        batches = self.batches(epoch)
        decoded = self._dali_epoch(batches, epoch) if self.backend == "dali" else self._torch_epoch(batches, epoch)
        return decoded if self.augment is None else self._augmented(decoded, epoch)

    def _augmented(self, decoded: Iterator[dict], epoch: int) -> Iterator[dict]:
        gen = epoch_generator(self.cfg.seed, epoch, self.rank)
        for batch in decoded:
            pixels = batch["pixels"].to(self.aug_device, non_blocking=True)
            yield {**batch, "pixels": self.augment(pixels, gen)}


def _to_torch(out) -> torch.Tensor:
    """A DALI TensorList (dense batch) -> torch tensor (CPU copy or GPU via DLPack)."""
    dense = out.as_tensor()
    if hasattr(dense, "_expose_dlpack_capsule") and type(dense).__name__ == "TensorGPU":
        return torch.utils.dlpack.from_dlpack(dense._expose_dlpack_capsule()).clone()
    return torch.from_numpy(np.array(dense))
