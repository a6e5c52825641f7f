"""Loaders: one epoch of batches from a ``ShardDataset``, on DALI or the PyTorch fallback.

Batches are dicts: ``pixels`` (train clips (B,3,T,H,W), or (B,V,3,T,H,W) with ``views`` V > 1;
test clips (B,2,3,T,H,W), the first and last clip of each video, or (B,1,3,T,H,W) with ``random_clip``; images (B,3,H,W)),
``labels`` (B,) int64 and ``keys``.
"""

from __future__ import annotations

import itertools
import sys
import warnings
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import numpy as np
import torch

from preprocess.machine import cpus_per_process
from preprocess.shards.reader import ShardError

from .augment import BatchAugment, epoch_generator, rrc_box
from .config import LoaderConfig
from .dataset import ShardDataset
from .handover import CopyGuard, dali_to_torch
from .header import check_declared_size, max_stored_pixels
from .plan import Batch, epoch_batches

_NOTICE_SHOWN = False
_NOTICES: set[str] = set()
READ_AHEAD = 3  # batches of shard bytes read ahead of DALI


class GpuDecodeError(RuntimeError):
    """DALI failed on the GPU for samples that decode on the CPU: not the data's fault."""


def default_threads() -> int:
    """DALI worker threads per process: the cores this process may use (affinity, cgroup quota,
    SLURM_CPUS_PER_TASK; ``preprocess.machine``), shared by the ranks on this node (torchrun's
    LOCAL_WORLD_SIZE), at least 2."""
    return max(2, cpus_per_process()[0])


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
        self,
        ds: ShardDataset,
        cfg: LoaderConfig,
        *,
        rank: int = 0,
        world: int = 1,
        backend: str = "auto",
        device_id: int | None = None,
        num_samples: int | None = None,
    ) -> None:
        self.ds, self.cfg, self.rank, self.world = ds, cfg, rank, world
        self.backend = resolve_backend(backend)
        self.device_id = device_id
        self.num_samples = num_samples
        self.video = ds.modality == "video"
        self.augment = BatchAugment(cfg, self.video) if cfg.train else None
        self.aug_device = torch.device("cuda", device_id) if device_id is not None else torch.device("cpu")
        self.threads = cfg.num_threads or default_threads()
        self.decode_on = "cpu"
        self._pipe = None
        self._pending: Iterator[tuple[Batch, list[np.ndarray]]] = iter(())
        self._crop_gen = torch.Generator()
        self._copies = CopyGuard()
        self.max_pixels = max_stored_pixels(ds.manifest.preprocess.size)  # per stored frame, checked before decoding
        self._source_error: ShardError | None = None  # raised inside DALI's external source; re-raised as is

    def batches(self, epoch: int) -> list[Batch]:
        return epoch_batches(self.ds, self.cfg, epoch=epoch, rank=self.rank, world=self.world, num_samples=self.num_samples)

    def __len__(self) -> int:
        return len(self.batches(0))

    def _bytes(self, pos: int) -> np.ndarray:
        """A sample's stored bytes, for either backend, after its header's declared frame size
        is checked against ``max_pixels`` (nothing is decoded yet): a ``ShardError`` naming the
        shard and key otherwise."""
        key = self.ds.keys[pos]
        try:
            data = self.ds.reader.get(key, self.ds.media_ext)
        except ShardError:
            raise
        except (OSError, ValueError) as err:
            raise ShardError(f"{self._shard_of(key)}: cannot read sample {key} ({err})") from None
        try:
            check_declared_size(data, self.video, self.max_pixels)
        except ValueError as err:
            raise ShardError(f"{self._shard_of(key)}: sample {key} {err}") from None
        return data

    def _shard_of(self, key: str) -> str:
        """The tar holding a sample, for error messages ("?" if the index does not know it)."""
        loc = self.ds.reader.locations.get(key)
        return str(self.ds.reader.paths[loc.shard]) if loc else "?"

    # ------------------------------------------------------------------ DALI
    def _read(self, batch: Batch) -> list[np.ndarray]:
        """The batch's bytes, copied out of the shard maps: the copy is the disk read (page
        faults happen here, on the read-ahead thread, not later inside DALI's copy)."""
        return [np.array(self._bytes(int(p))) for p in batch.positions]

    def _read_ahead(self, batches: list[Batch]) -> Iterator[tuple[Batch, list[np.ndarray]]]:
        """The epoch's batches with their shard bytes, read ``READ_AHEAD`` batches ahead on a
        worker thread (file reads release the GIL), so the training thread never waits on disk."""
        pool = ThreadPoolExecutor(1, thread_name_prefix="s4d-read")
        queue: deque = deque()
        todo = iter(batches)
        try:
            for batch in itertools.islice(todo, READ_AHEAD):
                queue.append((batch, pool.submit(self._read, batch)))
            while queue:
                batch, pending = queue.popleft()
                for nxt in itertools.islice(todo, 1):
                    queue.append((nxt, pool.submit(self._read, nxt)))
                yield batch, pending.result()
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def _image_crops(self, n: int) -> tuple[list[np.ndarray], ...]:
        """Per-sample training crops for the image graph, from the loader's own seeded
        generator: relative (top, left) and (bottom, right) of a random-resized crop, or a
        relative (y, x) crop position."""
        aug, gen = self.cfg.augment, self._crop_gen
        if aug.rrc:
            side = self.ds.manifest.preprocess.size  # stored images are squares of this side
            boxes = [rrc_box(side, side, aug.rrc_scale, aug.rrc_ratio, gen) for _ in range(n)]
            return (
                [np.array([t / side, left / side], np.float32) for t, left, h, w in boxes],
                [np.array([(t + h) / side, (left + w) / side], np.float32) for t, left, h, w in boxes],
            )
        pos = torch.rand(n, 2, generator=gen).numpy().astype(np.float32)
        return (list(pos),)

    def _dali_source(self):
        """Called by DALI (possibly ahead of the consumer): the next batch of the epoch."""
        try:
            batch, data = next(self._pending)  # StopIteration ends DALI's epoch
        except ShardError as err:  # DALI would wrap it in its own RuntimeError; _dali_batches raises it as is
            self._source_error = err
            raise
        labels = [np.asarray(self.ds.labels[p], dtype=np.int64) for p in batch.positions]
        if not self.video:
            return (data, labels, *self._image_crops(len(data))) if self.cfg.train else (data, labels)
        starts = batch.starts.reshape(len(batch.positions), -1)
        s0 = [np.asarray(s[0], dtype=np.int32) for s in starts]
        if self.cfg.train:
            return data, s0, labels
        s1 = [np.asarray(s[-1], dtype=np.int32) for s in starts]
        return data, s0, s1, labels

    def _decode_place(self) -> str:
        """``mixed`` or ``cpu``; a GPU run that must decode on the CPU says why, once."""
        from .probe import decode_place, gpu_decode

        codec = self.ds.manifest.preprocess.codec if self.video else "vp9"
        probe = gpu_decode(self.device_id, codec) if self.device_id is not None else None
        place, why = decode_place(self.device_id, self.video, self.ds.manifest.preprocess.size, probe)
        if why and why not in _NOTICES:
            _NOTICES.add(why)
            print(f"s4d: {why}; decoding on the CPU (augmentation stays on the GPU).", file=sys.stderr)
        return place

    def _dali_epoch(self, batches: list[Batch], epoch: int) -> Iterator[dict]:
        from .dali_pipes import build_image_pipe, build_video_pipe

        self._pending = self._read_ahead(batches)
        # The graphs draw nothing at random: the training image crops come from this generator,
        # seeded per (seed, epoch, rank), so ranks differ and a resumed run repeats its epoch;
        # one build serves every epoch.
        self._crop_gen = torch.Generator().manual_seed(int(np.random.default_rng([self.cfg.seed, epoch, 4000 + self.rank]).integers(2**62)))
        if self._pipe is None:
            self.decode_on = self._decode_place()
            self._pipe = (
                build_video_pipe(self.cfg, self._dali_source, self.ds.manifest.preprocess.size, self.device_id, self.decode_on, self.threads)
                if self.video
                else build_image_pipe(self.cfg, self._dali_source, self.device_id, self.decode_on, self.threads)
            )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                self._pipe.build()
        self._drained = False
        try:
            yield from self._dali_batches(batches)
        finally:
            if not self._drained:  # abandoned mid-epoch: DALI holds prefetched batches; start afresh
                self._pipe = None

    def _run(self):
        # on a GPU the outputs are handed over on torch's stream (no host wait on DALI's work)
        stream = torch.cuda.current_stream(self.device_id).cuda_stream if self.device_id is not None else None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return self._pipe.run(stream) if stream is not None else self._pipe.run()

    def _dali_batches(self, batches: list[Batch]) -> Iterator[dict]:
        for i, batch in enumerate(batches):
            try:
                outs = self._run()
            except RuntimeError as err:
                self._pipe = None  # a failed pipeline cannot continue; rebuild next epoch
                source_error, self._source_error = self._source_error, None
                raise (source_error or self._decode_failure(batch, err)) from None
            tensors = [dali_to_torch(o) for o in outs]  # train: uint8 (B,T,S,S,3) / (B,S,S,3)
            pixels = tensors[0] if self.cfg.train or not self.video else torch.stack(tensors[:2], dim=1)
            if self.video and not self.cfg.train and self.cfg.random_clip:  # the eval graph decodes the one start twice
                pixels = pixels[:, :1]
            if i == len(batches) - 1:
                # Drain before handing over the last batch (callers that take exactly the batches
                # they need never come back): with prefetching DALI has already asked past the
                # end; reset so the next epoch starts clean on the same graph.
                try:
                    self._run()
                except StopIteration:
                    pass
                self._pipe.reset()
                self._drained = True
            yield {"pixels": pixels, "labels": tensors[-1].long().view(-1), "keys": [self.ds.keys[p] for p in batch.positions]}

    def _decode_failure(self, batch: Batch, err: RuntimeError) -> Exception:
        """A DALI error names the shards only when the samples fail on the CPU too: a GPU
        decoder's fault (driver, NVDEC, memory) is not the data's."""
        detail = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        if self.decode_on == "mixed":
            bad = self._cpu_undecodable(batch)
            if not bad:
                return GpuDecodeError(
                    f"GPU {self.device_id}: DALI failed on a batch whose samples all decode on the CPU "
                    f"({detail}); run `s4d doctor`, or train with --backend torch"
                )
            return ShardError(f"{', '.join(bad)}: does not decode ({detail})")
        shards = sorted({self._shard_of(self.ds.keys[p]) for p in batch.positions})
        return ShardError(f"{', '.join(shards)}: decoding failed in DALI ({detail})")

    def _cpu_undecodable(self, batch: Batch) -> list[str]:
        from .sampling import clip_indices
        from .torch_fallback import decode_clip, decode_image

        bad = []
        for j, p in enumerate(batch.positions):
            key = self.ds.keys[p]
            try:
                data = self._bytes(int(p))
                if self.video:  # the very frames this batch asked for
                    n = int(self.ds.frames[p])
                    for s in np.atleast_1d(batch.starts[j]):
                        decode_clip(data, clip_indices(int(s), n, self.cfg.frames, self.cfg.stride), self.max_pixels)
                else:
                    decode_image(data)
            except (ValueError, OSError, ShardError):
                bad.append(f"{self._shard_of(key)} (sample {key})")
        return bad

    # ------------------------------------------------------------------ PyTorch
    def _torch_epoch(self, batches: list[Batch], epoch: int) -> Iterator[dict]:
        from .sampling import clip_indices
        from .torch_fallback import TorchTransforms, decode_clip, decode_image

        # the image crops' own generator, seeded per (seed, epoch, rank): torch's global one stays untouched
        gen = torch.Generator().manual_seed(int(np.random.default_rng([self.cfg.seed, epoch, 3000 + self.rank]).integers(2**31)))
        tf = TorchTransforms(self.cfg, self.video, self.ds.manifest.preprocess.size, gen)
        for batch in batches:
            items = []
            for j, p in enumerate(batch.positions):
                data = self._bytes(int(p))
                try:
                    if self.video:
                        n = int(self.ds.frames[p])
                        decoded = [
                            decode_clip(data, clip_indices(int(s), n, self.cfg.frames, self.cfg.stride), self.max_pixels)
                            for s in np.atleast_1d(batch.starts[j])
                        ]
                        if self.cfg.train:  # one decoded clip; BatchAugment makes the views
                            items.append(tf(decoded[0]))
                        else:
                            items.append(torch.stack([tf(d) for d in decoded]))
                    else:
                        items.append(tf(decode_image(data)))
                except (ValueError, OSError) as err:
                    raise ShardError(f"{self._shard_of(self.ds.keys[p])}: sample {self.ds.keys[p]} does not decode ({err})") from None
            yield {
                "pixels": torch.stack(items),
                "labels": torch.as_tensor(self.ds.labels[batch.positions]),
                "keys": [self.ds.keys[p] for p in batch.positions],
            }

    def epoch(self, epoch: int) -> Iterator[dict]:
        batches = self.batches(epoch)
        decoded = self._dali_epoch(batches, epoch) if self.backend == "dali" else self._torch_epoch(batches, epoch)
        return decoded if self.augment is None else self._augmented(decoded, epoch)

    def _augmented(self, decoded: Iterator[dict], epoch: int) -> Iterator[dict]:
        gen = epoch_generator(self.cfg.seed, epoch, self.rank)
        for batch in decoded:
            # Pixels and labels go to the augmentation's device here, under the guard (CPU-decoded
            # DALI outputs are DALI's, maybe pinned, buffers; ``handover.CopyGuard``), so the
            # step loop's own copies of them are no-ops.
            pixels, labels = self._copies.copy([batch["pixels"], batch["labels"]], self.aug_device)
            yield {**batch, "pixels": self.augment(pixels, gen), "labels": labels}
