"""One pass of a fine-tuned model over a manifest's test split and its still-image source:
pooled features, labels and MoAE gate weights per sample (a video's test clips averaged, as
the test protocol does), for the analyses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pipelines import Loader, open_dataset
from preprocess.manifest import Manifest, ManifestError, load_manifest, load_sfer

from ..checkpoint import load_classifier
from ..checkpoint.finite import check_finite
from ..eval.data import eval_loader_config, shard_folder
from ..eval.protocol import flat_clips, video_mean
from ..models import Classifier
from ..runtime import autocast, autocast_dtype, dali_device_id, resolve_device


@dataclass
class Collected:
    """One task's pass: pooled features (N, D), labels (N,), and per MoAE layer the mean gate
    weight of each expert per sample (layers, N, E)."""

    features: np.ndarray
    labels: np.ndarray
    gates: np.ndarray


@torch.no_grad()
def collect(model: Classifier, batches, device: torch.device) -> Collected:
    """Features and gates of every sample; a video's test clips are averaged. NaN or inf
    features are refused once, at the end, naming the first such sample."""
    feats, labels, gates, keys = [], [], [], []
    for batch in batches:
        x = batch["pixels"].to(device)
        flat, clips = flat_clips(x)
        with autocast(device, autocast_dtype("auto", device)):  # bf16 on CUDA, as trained and tested
            f_BD, aux, _ = model.forward_features(flat)
        feats.append(video_mean(f_BD, len(x), clips).float().cpu().numpy())
        per_layer = [video_mean(a.gates_TE.view(len(flat), -1, a.gates_TE.shape[-1]).mean(1), len(x), clips) for a in aux]
        if per_layer:
            gates.append(torch.stack(per_layer).float().cpu().numpy())
        labels.append(batch["labels"].numpy())
        keys += list(batch["keys"])
    if not feats:
        raise ManifestError("no samples to analyse")
    check_finite(np.concatenate(feats), "the encoder", keys)
    return Collected(np.concatenate(feats), np.concatenate(labels), np.concatenate(gates, axis=1) if gates else np.zeros((0, 0, 0)))


def task_data(m: Manifest, manifest_arg: str, fold: str | None, data_root: str | None, limit: int):
    fold = m.fold_name(fold)
    role = "test" if m.folds[fold].test else "train"
    return open_dataset(m, shard_folder(m, data_root, manifest_arg), fold, role).sample(limit), f"{fold}/{role}"


def collect_tasks(
    checkpoint: str,
    manifest: str,
    *,
    fold: str | None = None,
    data_root: str | None = None,
    limit: int = 1000,
    backend: str = "auto",
    batch_size: int = 8,
    device: str = "auto",
) -> dict[str, Any]:
    """Runs the model over the video manifest and its still-image source (if any)."""
    m = load_manifest(manifest)
    if m.modality != "video":
        raise ManifestError(f"{m.source}: analyses start from a video (DFER) manifest; {m.name} holds images")
    model = load_classifier(checkpoint)
    dev = resolve_device(device)
    model = model.to(dev).eval()
    out: dict[str, Any] = {"model": model, "tasks": {}}
    sources = [("video", m, manifest, fold)]
    sfer = load_sfer(m)
    if sfer is not None:
        sources.append(("image", sfer, str(sfer.source), None))
    for task, man, arg, f in sources:
        ds, split = task_data(man, arg, f, data_root, limit)
        loader = Loader(ds, eval_loader_config(man, model.config.encoder, batch_size), backend=backend, device_id=dali_device_id(dev))
        out["tasks"][task] = {"manifest": man, "split": split, "data": collect(model, loader.epoch(0), dev)}
    return out
