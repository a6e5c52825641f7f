"""Training video pipeline throughput: our shards + DALI (CPU, or GPU ``mixed``) and our PyTorch
fallback vs a reference-style loader (JPEG frame folders read with PIL in a DataLoader, timm's
RandAugment ops applied frame by frame with one draw per clip, as the authors' code does), on
the same clips, same sampling and the same recipe (RandAugment rand-m7-n4-mstd0.5-inc1 ->
random-resized crop -> flip -> normalise -> erasing).

    python benchmarks/bench_data.py                       # CPU, 2 threads / 2 workers
    python benchmarks/bench_data.py --device gpu          # DALI mixed decoding (needs a GPU)

Clips are cut from ../shared/fixtures/WolfgangLanger_Pexels.mp4 (160x160 centre crop) when
present, else synthesised. Every loader is timed over the same number of epochs, in
alternation; the table reports clips/s, frames/s and bytes on disk per clip.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from rich.console import Console
from rich.table import Table
from torch.utils.data import DataLoader, Dataset, Sampler

from pipelines import Loader, LoaderConfig, dali_available, open_dataset
from pipelines.augment import erase_box, rrc_box
from pipelines.plan import epoch_batches
from pipelines.sampling import clip_indices
from preprocess.manifest import parse_manifest
from preprocess.run import run_shards
from preprocess.shards.encoding import encode_clip
from preprocess.shards.folder import finalize


def source_clips(count: int, frames: int) -> list[np.ndarray]:
    video = Path(os.environ.get("S4D_FIXTURES", Path(__file__).resolve().parents[2] / "shared" / "fixtures")) / "WolfgangLanger_Pexels.mp4"
    if video.is_file():
        from preprocess.media import read_video

        all_frames, _ = read_video(video)
        crop = all_frames[:, 50:350, 280:580]
        import cv2

        small = np.stack([cv2.resize(f, (160, 160), interpolation=cv2.INTER_AREA) for f in crop])
        return [small[(i * frames) % (len(small) - frames) :][:frames] for i in range(count)]
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (frames, 160, 160, 3), dtype=np.uint8) for _ in range(count)]


class ReferenceClipTransform:
    """The reference's clip recipe on PIL frames: timm's RandAugment ops with one draw per clip
    applied to every frame (its list-of-frames ``AugmentOp``), ToTensor, normalise, random-resized
    crop with ``F.interpolate``, flip, one erasing box of noise."""

    def __init__(self, cfg: LoaderConfig) -> None:
        import random

        from timm.data.auto_augment import rand_augment_transform

        self.cfg, self.random = cfg, random
        spec = cfg.augment.randaugment
        self.ra = rand_augment_transform(spec, {"translate_const": int(cfg.size * 0.45), "interpolation": Image.BILINEAR}) if spec else None
        self.mean = torch.tensor(cfg.mean).view(3, 1, 1, 1)
        self.std = torch.tensor(cfg.std).view(3, 1, 1, 1)

    def _randaugment(self, frames: list) -> list:
        for op in np.random.choice(self.ra.ops, self.ra.num_layers, replace=True):
            if self.random.random() > op.prob:
                continue
            m = max(0.0, min(10.0, self.random.gauss(op.magnitude, op.magnitude_std)))
            args = op.level_fn(m, op.hparams) if op.level_fn is not None else ()
            frames = [op.aug_fn(f, *args, **op.kwargs) for f in frames]
        return frames

    def __call__(self, frames: list) -> torch.Tensor:
        aug = self.cfg.augment
        if self.ra is not None:
            frames = self._randaugment(frames)
        x = torch.stack([torch.from_numpy(np.asarray(f)) for f in frames]).permute(3, 0, 1, 2).float() / 255.0  # (3,T,H,W)
        x = (x - self.mean) / self.std
        gen = torch.default_generator
        top, left, h, w = rrc_box(x.shape[-2], x.shape[-1], aug.rrc_scale, aug.rrc_ratio, gen)
        x = torch.nn.functional.interpolate(
            x[..., top : top + h, left : left + w], size=(self.cfg.size, self.cfg.size), mode="bilinear", align_corners=False
        )
        if self.random.random() < aug.flip:
            x = x.flip(-1)
        if self.random.random() < aug.erase and (box := erase_box(x.shape[-2], x.shape[-1], gen)) is not None:
            t, l_, bh, bw = box
            x[..., t : t + bh, l_ : l_ + bw] = torch.randn(3, x.shape[1], bh, bw)
        return x


class JpegFolderClips(Dataset):
    """The reference style: one JPEG per frame, PIL decode of the sampled frames, transforms.
    Items are ``(epoch, i)``: the dataset derives the epoch's plan itself (the same pure plan
    our loaders use), so persistent workers need no state from the main process."""

    def __init__(self, ds, folder_of: dict[str, Path], cfg: LoaderConfig) -> None:
        self.ds, self.folder_of, self.cfg = ds, folder_of, cfg
        self.tf = ReferenceClipTransform(cfg)
        self._plans: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def plan(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        if epoch not in self._plans:
            batches = epoch_batches(self.ds, self.cfg, epoch=epoch)
            self._plans[epoch] = (np.concatenate([b.positions for b in batches]), np.concatenate([b.starts for b in batches]))
        return self._plans[epoch]

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, item: tuple[int, int]):
        epoch, i = item
        order, starts = self.plan(epoch)
        files = sorted(self.folder_of[self.ds.keys[order[i]]].iterdir())
        idx = clip_indices(int(starts[i]), len(files), self.cfg.frames, self.cfg.stride)
        frames = [Image.open(files[j]).convert("RGB") for j in idx]
        return self.tf(frames), int(self.ds.labels[order[i]])


class EpochSampler(Sampler):
    def __init__(self, n: int) -> None:
        self.n, self.epoch = n, 0

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        return iter([(self.epoch, i) for i in range(self.n)])


def folder_bytes(paths) -> int:
    return sum(p.stat().st_size for p in paths)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=24)
    ap.add_argument("--clip-frames", type=int, default=64, help="frames per stored clip")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2, help="DALI threads = DataLoader workers")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    args = ap.parse_args()
    if args.device == "gpu" and not torch.cuda.is_available():
        ap.error("--device gpu: torch sees no CUDA device here (run `s4d doctor`)")
    torch.set_num_threads(1)

    tmp = Path(tempfile.mkdtemp(prefix="s4d-bench-data-"))
    try:
        clips = source_clips(args.clips, args.clip_frames)
        raw = tmp / "raw"
        (raw / "jpg").mkdir(parents=True)
        rows = ["path,label,split"]
        jpeg_dirs = []
        for i, clip in enumerate(clips):
            (raw / f"c{i:03d}.webm").write_bytes(encode_clip(clip, 25.0, "vp9", 31))
            rows.append(f"c{i:03d}.webm,{'ab'[i % 2]},train")
            d = raw / "jpg" / f"c{i:03d}"
            d.mkdir()
            for j, f in enumerate(clip):
                Image.fromarray(f).save(d / f"{j:05d}.jpg", quality=95)
            jpeg_dirs.append(d)
        (raw / "list.csv").write_text("\n".join(rows) + "\n")
        m = parse_manifest(
            {
                "name": "bench",
                "modality": "video",
                "classes": ["a", "b"],
                "layout": {"adapter": "csv", "options": {"csv": "list.csv"}},
                "preprocess": {"align": False, "size": 160},
                "partitions": ["train"],
                "folds": {"main": {"train": ["train"], "test": []}},
                "clip": {"frames": 16, "stride": 4},
            },
            tmp / "bench.json",
        )
        run_shards(m, raw, tmp / "shards")
        finalize(m, tmp / "shards")
        ds = open_dataset(m, tmp / "shards", role="train")
        cfg = LoaderConfig(batch_size=args.batch, train=True, size=160, frames=16, stride=4, num_threads=args.workers)

        device_id = 0 if args.device == "gpu" else None
        loaders = {}
        if dali_available():
            where = "mixed" if device_id is not None else "cpu"
            loaders[f"ours: shards + DALI ({where})"] = Loader(ds, cfg, backend="dali", device_id=device_id)
            no_ra = replace(cfg, augment=replace(cfg.augment, randaugment=None))
            loaders[f"ours: shards + DALI ({where}), RandAugment off"] = Loader(ds, no_ra, backend="dali", device_id=device_id)
        loaders["ours: shards + PyTorch fallback (1 process)"] = Loader(ds, cfg, backend="torch")

        folder_of = {f"c{i:03d}": d for i, d in enumerate(jpeg_dirs)}

        class Reference:  # a warm DataLoader with persistent workers, one epoch per call
            def __init__(self, c: LoaderConfig) -> None:
                self.sampler = EpochSampler(len(ds))
                self.loader = DataLoader(
                    JpegFolderClips(ds, folder_of, c), batch_size=args.batch, sampler=self.sampler, num_workers=args.workers, persistent_workers=True
                )

            def epoch(self, epoch: int):
                self.sampler.epoch = epoch
                return iter(self.loader)

        loaders[f"reference: JPEG folders + PIL DataLoader ({args.workers} workers)"] = Reference(cfg)
        loaders[f"reference ({args.workers} workers), RandAugment off"] = Reference(replace(cfg, augment=replace(cfg.augment, randaugment=None)))

        def sync() -> None:  # GPU outputs are asynchronous: a clock stops only after the device has finished
            if device_id is not None:
                torch.cuda.synchronize(device_id)

        names = list(loaders)
        times = {n: 0.0 for n in names}
        # Warm-up, one whole epoch each: DALI graphs built and kept (a loader abandoned mid-epoch
        # drops its graph and would rebuild it inside the first timed epoch), DataLoader workers
        # started with nothing of the warm-up epoch left in flight.
        for loader in loaders.values():
            for _ in loader.epoch(99):
                pass
        sync()
        for epoch in range(args.epochs):
            for name in names:
                start = time.perf_counter()
                for _ in loaders[name].epoch(epoch):
                    pass
                sync()
                times[name] += time.perf_counter() - start

        n = len(ds) * args.epochs
        shard_bytes = folder_bytes((tmp / "shards").glob("*.tar")) / len(ds)
        jpeg_bytes = folder_bytes(p for d in jpeg_dirs for p in d.iterdir()) / len(ds)
        ref_name = next(k for k in names if k.startswith("reference") and "off" not in k)
        ref_rate = n / times[ref_name]
        table = Table(
            title=f"training clips (16 frames, stride 4, 160 px, full augmentation), {len(ds)} clips x {args.epochs} epochs, batch {args.batch}"
        )
        for col in ("loader", "clips/s", "frames/s", "vs reference", "KiB on disk per clip"):
            table.add_column(col)
        for name in names:
            rate = n / times[name]
            size = jpeg_bytes if name.startswith("reference") else shard_bytes
            table.add_row(name, f"{rate:.1f}", f"{rate * 16:.0f}", f"{rate / ref_rate:.2f}x", f"{size / 1024:.1f}")
        console = Console()
        console.print(table)
        console.print(
            f"command: python benchmarks/bench_data.py --clips {args.clips} --clip-frames {args.clip_frames} "
            f"--batch {args.batch} --workers {args.workers} --epochs {args.epochs} --device {args.device}"
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
