"""``make demo``: the whole system on the procedural dataset, through the real path:
generated raw media + CSVs -> ``s4d shards`` -> ``s4d pretrain`` (short) -> ``s4d train`` with
the still-image source -> ``s4d eval``."""

from __future__ import annotations

import json
import time
from pathlib import Path

from preprocess.manifest import parse_manifest
from preprocess.run import finalize, run_shards

from ..train.finetune import TrainConfig, train
from ..train.optim import OptimConfig
from ..train.pretrain import PretrainConfig, pretrain
from .faces import IMAGE_CLASSES, VIDEO_CLASSES, write_dataset

FOLDS = {"main": {"train": ["train"], "test": ["test"]}}


def demo_manifests(root: Path) -> tuple[Path, Path, Path]:
    """Manifests for the generated CSVs (own-data layout), written to ``root/manifests``."""
    out = root / "manifests"
    out.mkdir(parents=True, exist_ok=True)
    videos = {"name": "demo_videos", "modality": "video", "classes": list(VIDEO_CLASSES),
              "description": "Procedural face clips of the S4D demo; happy_onset/happy_offset differ only in time.",
              "layout": {"adapter": "csv", "options": {"csv": "videos.csv"}},
              "preprocess": {"align": False, "size": 64, "codec": "vp9"}, "partitions": ["train", "test"], "folds": FOLDS,
              "clip": {"frames": 8, "stride": 4}, "sfer": {"manifest": "demo_images.json", "proportion": 0.5}}
    images = {"name": "demo_images", "modality": "image", "classes": list(IMAGE_CLASSES),
              "description": "Apex frames of the procedural faces (the still-image source).",
              "layout": {"adapter": "csv", "options": {"csv": "images.csv"}},
              "preprocess": {"align": False, "size": 72, "codec": "jpeg", "quality": 95}, "partitions": ["train"],
              "folds": {"main": {"train": ["train"], "test": []}}}
    mixture = {"name": "demo_pretrain", "sources": [{"manifest": "demo_videos.json", "share": 1.0, "repeat": 2},
                                                     {"manifest": "demo_images.json", "share": 1.0}]}
    paths = []
    for name, spec in (("demo_videos", videos), ("demo_images", images), ("demo_pretrain", mixture)):
        (out / f"{name}.json").write_text(json.dumps(spec, indent=2) + "\n")
        paths.append(out / f"{name}.json")
    return paths[0], paths[1], paths[2]


def run_demo(root: str | Path = "demo", *, clips_per_class: int = 150, images_per_class: int = 60, pretrain_epochs: int = 2,
             epochs: int = 30, backend: str = "torch", seed: int = 0, log=print) -> dict:
    root = Path(root)
    t0 = time.perf_counter()
    raw = root / "raw"
    if not (raw / "videos.csv").is_file():
        log(f"generating the procedural dataset in {raw}")
        write_dataset(raw, clips_per_class=clips_per_class, images_per_class=images_per_class, seed=seed)
    video_m, image_m, mixture = demo_manifests(root)
    data = root / "data"
    for path in (video_m, image_m):
        m = parse_manifest(json.loads(path.read_text()), path)
        run_shards(m, raw, data / m.name)
        result = finalize(m, data / m.name)
        log(f"shards: {m.name}: {sum(result['counts'].values())} samples in {data / m.name}")
    pre = PretrainConfig(mixture=str(mixture), out=str(root / "runs" / "pretrain"), size="demo", epochs=pretrain_epochs,
                         video_batch=8, image_batch=16, data_root=str(data), backend=backend, seed=seed)
    pretrain(pre, log=log)
    cfg = TrainConfig(manifest=str(video_m), out=str(root / "runs" / "train"), size="demo", epochs=epochs, video_batch=8,
                      image_batch=16, init=str(root / "runs" / "pretrain" / "checkpoints" / "last.safetensors"),
                      data_root=str(data), augment=False, mixup=0.0, cutmix=0.0, smoothing=0.0, backend=backend, seed=seed,
                      optim=OptimConfig(base_lr=1e-3, reference_batch=8, layer_decay=1.0, weight_decay=0.0, warmup_epochs=1))
    summary = train(cfg, log=log)
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    return summary
