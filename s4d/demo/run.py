"""``make demo``: the whole system on the procedural dataset, through the real path:
generated raw media + CSVs -> ``s4d shards`` -> ``s4d pretrain`` (short) -> ``s4d train`` with
the still-image source -> ``s4d eval``."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from preprocess.manifest import parse_manifest
from preprocess.run import run_shards
from preprocess.shards.folder import finalize

from ..train.config import PretrainConfig, TrainConfig
from ..train.finetune import train
from ..train.optim import OptimConfig
from ..train.pretrain import pretrain
from .faces import IMAGE_CLASSES, VIDEO_CLASSES, make_story, write_dataset

FPS = 25.0  # frame rate of the generated videos

FOLDS = {"main": {"train": ["train"], "test": ["test"]}}


def demo_manifests(root: Path) -> tuple[Path, Path, Path]:
    """Manifests for the generated CSVs (own-data layout), written to ``root/manifests``."""
    out = root / "manifests"
    out.mkdir(parents=True, exist_ok=True)
    videos = {
        "name": "demo_videos",
        "modality": "video",
        "classes": list(VIDEO_CLASSES),
        "description": "Procedural face clips of the S4D demo; happy_onset/happy_offset differ only in time.",
        "layout": {"adapter": "csv", "options": {"csv": "videos.csv"}},
        "preprocess": {"align": False, "size": 64, "codec": "vp9"},
        "partitions": ["train", "test"],
        "folds": FOLDS,
        "clip": {"frames": 8, "stride": 4},
        "sfer": {"manifest": "demo_images.json", "proportion": 0.5},
    }
    images = {
        "name": "demo_images",
        "modality": "image",
        "classes": list(IMAGE_CLASSES),
        "description": "Apex frames of the procedural faces (the still-image source).",
        "layout": {"adapter": "csv", "options": {"csv": "images.csv"}},
        "preprocess": {"align": False, "size": 72, "codec": "jpeg", "quality": 95},
        "partitions": ["train"],
        "folds": {"main": {"train": ["train"], "test": []}},
    }
    mixture = {
        "name": "demo_pretrain",
        "sources": [{"manifest": "demo_videos.json", "share": 1.0, "repeat": 2}, {"manifest": "demo_images.json", "share": 1.0}],
    }
    paths = []
    for name, spec in (("demo_videos", videos), ("demo_images", images), ("demo_pretrain", mixture)):
        (out / f"{name}.json").write_text(json.dumps(spec, indent=2) + "\n")
        paths.append(out / f"{name}.json")
    return paths[0], paths[1], paths[2]


def run_demo(
    root: str | Path = "demo",
    *,
    clips_per_class: int = 150,
    images_per_class: int = 60,
    pretrain_epochs: int = 3,
    epochs: int = 60,
    backend: str = "auto",
    seed: int = 0,
    log=print,
) -> dict:
    """The whole path; returns the test summary plus the paths and figures of what followed:
    ``predict`` on a generated video, the analyses, and the frame-order test."""
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
    pre = PretrainConfig(
        mixture=str(mixture),
        out=str(root / "runs" / "pretrain"),
        size="demo",
        epochs=pretrain_epochs,
        video_batch=8,
        image_batch=16,
        data_root=str(data),
        backend=backend,
        seed=seed,
    )
    pretrain(pre, log=log)
    cfg = TrainConfig(
        manifest=str(video_m),
        out=str(root / "runs" / "train"),
        size="demo",
        epochs=epochs,
        video_batch=8,
        image_batch=16,
        init=str(root / "runs" / "pretrain" / "checkpoints" / "last.safetensors"),
        data_root=str(data),
        augment=False,
        mixup=0.0,
        cutmix=0.0,
        smoothing=0.0,
        backend=backend,
        seed=seed,
        optim=OptimConfig(base_lr=1e-3, reference_batch=8, layer_decay=1.0, weight_decay=0.0, warmup_epochs=1),
    )
    summary = train(cfg, log=log)
    ckpt = str(root / "runs" / "train" / "checkpoints" / "last.safetensors")
    summary["checkpoint"] = ckpt
    summary["timeline"] = demo_timeline(root, ckpt, seed)
    summary["analysis"] = demo_analyses(root, ckpt, str(video_m), str(data), backend)
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    return summary


def demo_timeline(root: Path, ckpt: str, seed: int) -> dict:
    """``s4d predict`` on a new identity acting every class in turn, with the truth marked."""
    from preprocess.shards.encoding import encode_clip

    from ..infer import PredictConfig, Predictor, write_output
    from ..plots import plot_timeline

    frames, parts = make_story(np.random.default_rng(seed + 1000))
    video = root / "story.webm"
    video.write_bytes(encode_clip(frames, FPS, "vp9", 31))
    result = Predictor(PredictConfig(ckpt, hop=2, align=False))(video)  # drawn faces: MTCNN sees none
    marks = [(cls, a / FPS, b / FPS) for cls, a, b in parts]
    return {
        "video": str(video),
        "json": str(write_output(result, root / "story.json")),
        "plot": str(plot_timeline(result, root / "story.png", "s4d predict demo/story.webm (top: what the face does)", marks)),
        "prediction": result["prediction"],
    }


def demo_analyses(root: Path, ckpt: str, manifest: str, data: str, backend: str) -> dict:
    from ..analysis.collect import collect_tasks
    from ..analysis.experts import analyze_experts
    from ..analysis.order import frame_order_test, write_frame_order
    from ..analysis.relevance import analyze_relevance

    out = root / "analysis"
    collected = collect_tasks(ckpt, manifest, data_root=data, backend=backend)
    experts = analyze_experts(collected, out, "demo model: mean gate weight per expert", force=True)
    relevance = analyze_relevance(collected, out, "demo model: class-centre cosine similarity", force=True)
    order = frame_order_test(ckpt, manifest, data_root=data, backend=backend)
    write_frame_order(order, out, force=True)  # a re-run demo replaces its own analyses
    return {"experts": experts, "relevance": relevance, "frame_order": order}
