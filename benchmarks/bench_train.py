"""End-to-end training throughput: ``s4d train`` (joint fine-tuning step incl. loading,
augmentation, Mixup, forward/backward, optimiser) and ``s4d pretrain`` (MAE) on generated
160 px clips and images, measured as clips (or images) per second over whole epochs.

    python benchmarks/bench_train.py                      # base model, CPU
    python benchmarks/bench_train.py --size small --clips 16
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from preprocess.manifest import parse_manifest
from preprocess.run import run_shards
from preprocess.shards.encoding import encode_clip
from preprocess.shards.folder import finalize
from s4d.train.config import PretrainConfig, TrainConfig
from s4d.train.finetune import train
from s4d.train.optim import OptimConfig
from s4d.train.pretrain import pretrain


def make_data(root: Path, clips: int, images: int) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    raw = root / "raw"
    raw.mkdir(parents=True)
    vrows, irows = ["path,label,split"], ["path,label,split"]
    for i in range(clips):
        base = rng.integers(0, 255, (1, 160, 160, 3), dtype=np.uint8)
        frames = np.clip(base.astype(int) + np.arange(48)[:, None, None, None], 0, 255).astype(np.uint8)
        (raw / f"v{i}.webm").write_bytes(encode_clip(frames, 25.0, "vp9", 31))
        vrows.append(f"v{i}.webm,{'ab'[i % 2]},{'train' if i < clips - 2 else 'test'}")
    import cv2

    for i in range(images):
        cv2.imwrite(str(raw / f"i{i}.jpg"), rng.integers(0, 255, (192, 192, 3), dtype=np.uint8))
        irows.append(f"i{i}.jpg,{'ab'[i % 2]},train")
    (raw / "v.csv").write_text("\n".join(vrows) + "\n")
    (raw / "i.csv").write_text("\n".join(irows) + "\n")
    folds = {"main": {"train": ["train"], "test": ["test"]}}
    clipsm = {
        "name": "clips",
        "modality": "video",
        "classes": ["a", "b"],
        "layout": {"adapter": "csv", "options": {"csv": "v.csv"}},
        "preprocess": {"align": False, "size": 160},
        "partitions": ["train", "test"],
        "folds": folds,
        "clip": {"frames": 16, "stride": 2},
        "sfer": {"manifest": "stills.json", "proportion": 0.5},
    }
    stillm = {
        "name": "stills",
        "modality": "image",
        "classes": ["a", "b"],
        "layout": {"adapter": "csv", "options": {"csv": "i.csv"}},
        "preprocess": {"align": False, "size": 192, "codec": "jpeg", "quality": 95},
        "partitions": ["train", "test"],
        "folds": folds,
    }
    for spec in (clipsm, stillm):
        (root / f"{spec['name']}.json").write_text(json.dumps(spec))
        m = parse_manifest(spec, root / f"{spec['name']}.json")
        run_shards(m, raw, root / "data" / m.name)
        finalize(m, root / "data" / m.name)
    (root / "mix.json").write_text(
        json.dumps({"name": "mix", "sources": [{"manifest": "clips.json", "share": 1.0, "repeat": 4}, {"manifest": "stills.json", "share": 1.0}]})
    )
    return root / "clips.json", root / "mix.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="base", choices=["debug", "small", "base"])
    ap.add_argument("--clips", type=int, default=10)
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--backend", default="auto")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="s4d-bench-train-"))
    quiet = lambda *_: None  # noqa: E731
    try:
        manifest, mixture = make_data(tmp, args.clips, args.images)
        rows = []
        ft = TrainConfig(
            manifest=str(manifest),
            out=str(tmp / "ft"),
            size=args.size,
            epochs=2,
            video_batch=args.batch,
            image_batch=args.batch * 2,
            data_root=str(tmp / "data"),
            backend=args.backend,
            optim=OptimConfig(warmup_epochs=0),
        )
        train(ft, log=quiet)
        epochs = [json.loads(x) for x in (tmp / "ft" / "metrics.jsonl").read_text().splitlines()]
        steps, secs = epochs[-1]["steps"], epochs[-1]["seconds"]  # second epoch: warm
        video_steps = args.clips - 2  # train clips; joint steps also include image batches
        rows.append(
            (
                "s4d train (joint, S4D)",
                f"{steps} steps ({-(-video_steps // args.batch)} video)",
                secs,
                f"{(video_steps) / secs:.2f} clips/s (+ images)",
            )
        )
        pre = PretrainConfig(
            mixture=str(mixture),
            out=str(tmp / "pre"),
            size=args.size,
            epochs=2,
            video_batch=args.batch,
            image_batch=args.batch * 4,
            data_root=str(tmp / "data"),
            backend=args.backend,
        )
        pretrain(pre, log=quiet)
        epochs = [json.loads(x) for x in (tmp / "pre" / "metrics.jsonl").read_text().splitlines()]
        steps, secs = epochs[-1]["steps"], epochs[-1]["seconds"]
        views = 4 * (args.clips - 2) + args.images
        rows.append(("s4d pretrain (MAE, 4 views/clip)", f"{steps} steps", secs, f"{views / secs:.2f} samples/s (views + images)"))
        dev = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU, {torch.get_num_threads()} threads"
        table = Table(title=f"end-to-end training, {args.size} model, batch {args.batch}, {dev}")
        for col in ("run", "epoch", "seconds", "throughput"):
            table.add_column(col)
        for r in rows:
            table.add_row(r[0], r[1], f"{r[2]:.1f}", r[3])
        Console().print(table)
        print(f"command: python benchmarks/bench_train.py --size {args.size} --clips {args.clips} --images {args.images} --batch {args.batch}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
