"""``s4d eval``: a checkpoint on a manifest's test set, with the test protocol, per-class recall
and a confusion matrix; cross-task evaluation (the image head on videos and back, the paper's
Table IX) maps classes by their canonical names."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from pipelines import Augment, Loader, LoaderConfig, open_dataset
from preprocess.manifest import Manifest, ManifestError, load_manifest

from ..analysis.plots import plot_scores
from ..checkpoint import load_model
from ..models.config import EncoderConfig
from ..runtime import autocast_dtype, dali_device_id
from .dist import setup
from .finetune import _shard_folder, write_predictions
from .loop import predict
from .metrics import scores

# DFER and AffectNet name the same expressions differently.
CANONICAL = {"happy": "happiness", "sad": "sadness", "angry": "anger"}


def canonical(name: str) -> str:
    return CANONICAL.get(name.lower(), name.lower())


def head_columns(manifest_classes: tuple[str, ...], head_classes: tuple[str, ...]) -> list[int | None]:
    """For each manifest class, the head's column with the same canonical name (or None)."""
    index = {canonical(c): i for i, c in enumerate(head_classes)}
    return [index.get(canonical(c)) for c in manifest_classes]


def eval_loader_config(m: Manifest, enc: EncoderConfig, batch_size: int = 8) -> LoaderConfig:
    """The test-time loader for a manifest's samples and a model's input geometry: videos as
    the test protocol's clips, images resized to 1.2x and centre-cropped."""
    if m.modality == "video":
        if m.clip.frames != enc.num_frames:
            raise ManifestError(f"{m.source}: clip.frames {m.clip.frames} but the checkpoint's model takes {enc.num_frames} frames")
        return LoaderConfig(batch_size=batch_size, train=False, size=enc.img_size, frames=m.clip.frames, stride=m.clip.stride,
                            crop=m.clip.crop, augment=Augment.off())
    return LoaderConfig(batch_size=batch_size, train=False, size=enc.img_size, image_resize=round(enc.img_size * 1.2),
                        augment=Augment.off())


def evaluate_checkpoint(
    manifest: str, checkpoint: str, *, out: str, fold: str | None = None, task: str | None = None,
    data_root: str | None = None, backend: str = "auto", batch_size: int = 8, log=print,
) -> dict[str, Any]:
    m = load_manifest(manifest)
    _, device = setup()
    model = load_model(checkpoint).to(device)
    task = task or m.modality
    if task not in model.head:
        raise ManifestError(f"{checkpoint}: no {task!r} head (heads: {sorted(model.head)})")
    enc = model.config.encoder
    fold = fold or next(iter(m.folds))
    if fold not in m.folds:
        raise ManifestError(f"{m.source}: no fold {fold!r} (folds: {list(m.folds)})")
    ds = open_dataset(m, _shard_folder(m, data_root, manifest), fold, "test")
    cfg = eval_loader_config(m, enc, batch_size)
    loader = Loader(ds, cfg, backend=backend, device_id=dali_device_id(device))
    pred = predict(model, loader.epoch(0), task, device, autocast_dtype("auto", device))  # bf16 on CUDA, as the run's own test

    head_names = tuple(model.config.class_names.get(task, ())) or None
    excluded = 0
    if head_names is None and task != m.modality:
        raise ManifestError(f"{checkpoint}: the {task} head has no class names, so its classes cannot be matched to "
                            f"{m.name}'s; cross-task evaluation needs a checkpoint trained by s4d (names in its config)")
    if head_names is None and model.config.heads[task] != len(m.classes):
        raise ManifestError(f"{checkpoint}: the {task} head has {model.config.heads[task]} classes and no class names; "
                            f"{m.name} has {len(m.classes)}")
    if head_names is not None and head_names != m.classes:  # cross-task: map columns by name
        cols = head_columns(m.classes, head_names)
        keep = np.array([cols[y] is not None for y in pred["labels"]])
        excluded = int((~keep).sum())
        probs = np.stack([pred["probs"][:, c] if c is not None else np.zeros(len(pred["keys"])) for c in cols], axis=1)
        pred = {"keys": [k for k, ok in zip(pred["keys"], keep) if ok], "labels": pred["labels"][keep], "probs": probs[keep]}
    s = scores(pred["labels"], pred["probs"].argmax(1), len(m.classes))
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_predictions(out_dir / "predictions.parquet", pred, fold, m.classes)
    summary = {"manifest": m.name, "fold": fold, "checkpoint": str(checkpoint), "task_head": task, "uar": s["uar"], "war": s["war"],
               "count": s["count"], "excluded_no_matching_class": excluded, "recall": dict(zip(m.classes, s["recall"])),
               "confusion": s["confusion"]}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot_scores(out_dir, s["confusion"], summary["recall"], s["uar"], f"{m.name} fold {fold} ({task} head)")
    log(f"{m.name} fold {fold}, {task} head: UAR {100 * s['uar']:.2f}  WAR {100 * s['war']:.2f} over {s['count']} samples"
        + (f" ({excluded} without a matching class left out)" if excluded else ""))
    return summary
