"""``s4d analyze``: the paper's analyses of a trained model, as PNG + JSON.

- ``experts``: mean gate weight of every expert in every MoAE layer, for video (DFER) inputs and
  for still-image (SFER) inputs (the paper's Fig. 5: do the tasks use different experts?).
- ``relevance``: cosine similarity between class centres (mean pooled encoder feature per
  class) of the video classes and the still-image classes (Fig. 4).
- ``scores``: confusion matrix and per-class recall of any ``eval``/``train``/``cv`` output (Fig. 7).

The first two run the checkpoint over the manifest's test split and its SFER manifest's images
(test split, or train where it has none), on at most ``limit`` samples of each.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipelines import Loader, open_dataset
from preprocess.manifest import Manifest, ManifestError, load_manifest, load_sfer

from ..checkpoint import load_model
from ..models import Classifier
from ..runtime import autocast, autocast_dtype, dali_device_id, resolve_device
from ..train.evaluate import eval_loader_config
from ..train.finetune import _shard_folder
from ..train.loop import predict
from .plots import plot_experts, plot_relevance, plot_scores


@dataclass
class Collected:
    """One task's pass: pooled features (N, D), labels (N,), and per MoAE layer the mean gate
    weight of each expert per sample (layers, N, E)."""

    features: np.ndarray
    labels: np.ndarray
    gates: np.ndarray


@torch.no_grad()
def collect(model: Classifier, batches, device: torch.device) -> Collected:
    """Features and gates of every sample; a video's test clips are averaged."""
    feats, labels, gates = [], [], []
    for batch in batches:
        x = batch["pixels"].to(device)
        clips = x.shape[1] if x.ndim == 6 else 1
        flat = x.flatten(0, 1) if x.ndim == 6 else x
        with autocast(device, autocast_dtype("auto", device)):  # bf16 on CUDA, as trained and tested
            f_BD, aux, _ = model.forward_features(flat)
        feats.append(f_BD.view(len(x), clips, -1).mean(1).float().cpu().numpy())
        per_layer = [a.gates_TE.view(len(flat), -1, a.gates_TE.shape[-1]).mean(1).view(len(x), clips, -1).mean(1) for a in aux]
        if per_layer:
            gates.append(torch.stack(per_layer).float().cpu().numpy())
        labels.append(batch["labels"].numpy())
    if not feats:
        raise ManifestError("no samples to analyse")
    return Collected(np.concatenate(feats), np.concatenate(labels), np.concatenate(gates, axis=1) if gates else np.zeros((0, 0, 0)))


def _task_data(m: Manifest, manifest_arg: str, fold: str | None, data_root: str | None, limit: int):
    fold = fold or next(iter(m.folds))
    if fold not in m.folds:
        raise ManifestError(f"{m.source}: no fold {fold!r} (folds: {list(m.folds)})")
    role = "test" if m.folds[fold].test else "train"
    return open_dataset(m, _shard_folder(m, data_root, manifest_arg), fold, role).sample(limit), f"{fold}/{role}"


def collect_tasks(checkpoint: str, manifest: str, *, fold: str | None = None, data_root: str | None = None, limit: int = 1000,
                  backend: str = "auto", batch_size: int = 8, device: str = "auto") -> dict[str, Any]:
    """Runs the model over the video manifest and its still-image source (if any)."""
    m = load_manifest(manifest)
    if m.modality != "video":
        raise ManifestError(f"{m.source}: analyses start from a video (DFER) manifest; {m.name} holds images")
    model = load_model(checkpoint)
    if not isinstance(model, Classifier):
        raise ManifestError(f"{checkpoint}: a pre-training checkpoint; analyse a fine-tuned one")
    dev = resolve_device(device)
    model = model.to(dev).eval()
    out: dict[str, Any] = {"model": model, "tasks": {}}
    sources = [("video", m, manifest, fold)]
    sfer = load_sfer(m)
    if sfer is not None:
        sources.append(("image", sfer, str(sfer.source), None))
    for task, man, arg, f in sources:
        ds, split = _task_data(man, arg, f, data_root, limit)
        loader = Loader(ds, eval_loader_config(man, model.config.encoder, batch_size), backend=backend, device_id=dali_device_id(dev))
        out["tasks"][task] = {"manifest": man, "split": split, "data": collect(model, loader.epoch(0), dev)}
    return out


def analyze_experts(collected: dict[str, Any], out: Path, title: str) -> dict[str, Any]:
    model: Classifier = collected["model"]
    if model.config.moae is None:
        raise ManifestError("this model has no MoAE layers (a plain ViT baseline): nothing to analyse")
    layers = list(model.config.moae.blocks)
    by_task = {task: t["data"].gates.mean(axis=1) for task, t in collected["tasks"].items()}  # (layers, E)
    result = {"layers": layers, "experts": model.config.moae.num_experts, "top_k": model.config.moae.top_k,
              "samples": {task: int(len(t["data"].labels)) for task, t in collected["tasks"].items()},
              "mean_gate": {task: v.round(6).tolist() for task, v in by_task.items()}}
    if len(by_task) == 2:  # how differently the tasks route: half the L1 distance of the normalised gate profiles
        v, i = by_task["video"], by_task["image"]
        tv = 0.5 * np.abs(v / v.sum(1, keepdims=True) - i / i.sum(1, keepdims=True)).sum(1)
        result["task_difference"] = dict(zip(map(str, layers), tv.round(6).tolist()))
    out.mkdir(parents=True, exist_ok=True)
    (out / "experts.json").write_text(json.dumps(result, indent=2) + "\n")
    result["plot"] = str(plot_experts(out / "experts.png", layers, by_task, title))
    return result


def class_centres(features: np.ndarray, labels: np.ndarray, classes: int) -> np.ndarray:
    """(classes, D) mean feature per class (NaN rows for classes without samples)."""
    centres = np.full((classes, features.shape[1]), np.nan)
    for c in range(classes):
        if (labels == c).any():
            centres[c] = features[labels == c].mean(0)
    return centres


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return a @ b.T


def analyze_relevance(collected: dict[str, Any], out: Path, title: str) -> dict[str, Any]:
    tasks = collected["tasks"]
    if "image" not in tasks:
        raise ManifestError("the manifest names no still-image (sfer) source: task relevance needs both")
    v, i = tasks["video"], tasks["image"]
    v_names, i_names = v["manifest"].classes, i["manifest"].classes
    sim = cosine(class_centres(v["data"].features, v["data"].labels, len(v_names)),
                 class_centres(i["data"].features, i["data"].labels, len(i_names)))
    result = {"video_classes": list(v_names), "image_classes": list(i_names),
              "cosine": [[None if np.isnan(x) else round(float(x), 6) for x in row] for row in sim],
              "closest_image_class": {c: (i_names[int(np.nanargmax(row))] if not np.isnan(row).all() else None)
                                      for c, row in zip(v_names, sim)},
              "samples": {"video": int(len(v["data"].labels)), "image": int(len(i["data"].labels))}}
    out.mkdir(parents=True, exist_ok=True)
    (out / "relevance.json").write_text(json.dumps(result, indent=2) + "\n")
    result["plot"] = str(plot_relevance(out / "relevance.png", np.nan_to_num(sim), v_names, i_names, title))
    return result


def shuffle_frames(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Every clip of (..., 3, T, H, W) with its T frames in a random order other than the identity."""
    flat = x.reshape(-1, *x.shape[-4:])
    T = x.shape[-3]
    out = torch.empty_like(flat)
    for i, clip in enumerate(flat):
        perm = torch.randperm(T, generator=g)
        while T > 1 and torch.equal(perm, torch.arange(T)):
            perm = torch.randperm(T, generator=g)
        out[i] = clip[:, perm]
    return out.view_as(x)


@torch.no_grad()
def frame_order_test(checkpoint: str, manifest: str, *, fold: str | None = None, data_root: str | None = None, backend: str = "auto",
                     batch_size: int = 8, seed: int = 0, device: str = "auto") -> dict[str, Any]:
    """Does the model use time? The test split scored twice: frames in order, and the same
    frames in a random order per clip (never the identity). Classes told apart only by the order
    of their frames fall to chance when shuffled; a model blind to time scores the same both ways."""
    from ..train.metrics import scores

    m = load_manifest(manifest)
    model = load_model(checkpoint)
    if not isinstance(model, Classifier) or m.modality != "video":
        raise ManifestError(f"{checkpoint} on {m.name}: the frame-order test needs a fine-tuned model and a video manifest")
    head = tuple(model.config.class_names.get("video", ()))
    if (head and head != m.classes) or model.config.heads["video"] != len(m.classes):
        raise ManifestError(f"{checkpoint}: its video head ({', '.join(head) or model.config.heads['video']}) does not "
                            f"predict {m.name}'s classes ({', '.join(m.classes)}); the frame-order test needs the same classes")
    dev = resolve_device(device)
    model = model.to(dev).eval()
    fold = fold or next(iter(m.folds))
    ds = open_dataset(m, _shard_folder(m, data_root, manifest), fold, "test")
    g = torch.Generator().manual_seed(seed)
    labels, ordered, shuffled = [], [], []
    amp = autocast_dtype("auto", dev)
    loader = Loader(ds, eval_loader_config(m, model.config.encoder, batch_size), backend=backend, device_id=dali_device_id(dev))
    for batch in loader.epoch(0):
        for b, store in ((batch, ordered), ({**batch, "pixels": shuffle_frames(batch["pixels"], g)}, shuffled)):
            store.append(predict(model, [b], "video", dev, amp)["probs"].argmax(1))  # the test protocol, clips averaged
        labels.append(batch["labels"].numpy())
    y = np.concatenate(labels)
    a = scores(y, np.concatenate(ordered), len(m.classes))
    b = scores(y, np.concatenate(shuffled), len(m.classes))
    return {"classes": list(m.classes), "count": int(len(y)), "uar": a["uar"], "uar_shuffled": b["uar"],
            "recall": dict(zip(m.classes, a["recall"])), "recall_shuffled": dict(zip(m.classes, b["recall"]))}


def analyze_scores(run_dir: Path, out: Path | None = None) -> dict[str, Any]:
    """Figures of an ``eval``/``train``/``cv`` output folder (its ``summary.json``)."""
    path = Path(run_dir) / "summary.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no summary.json (give the output folder of s4d eval, train or cv)")
    summary = json.loads(path.read_text())
    for key in ("confusion", "recall", "uar"):
        if key not in summary:
            raise ManifestError(f"{path}: no {key!r} field; not an s4d evaluation summary")
    out = Path(out or run_dir)
    title = f"{summary.get('manifest', Path(run_dir).name)}: UAR {100 * summary['uar']:.1f}, WAR {100 * summary.get('war', 0):.1f}"
    plots = plot_scores(out, summary["confusion"], summary["recall"], summary["uar"], title)
    cm = np.asarray(summary["confusion"])
    classes = list(summary["recall"])
    off = cm - np.diag(np.diag(cm))
    worst = np.unravel_index(off.argmax(), off.shape) if off.any() else None
    return {"plots": [str(p) for p in plots], "uar": summary["uar"], "war": summary.get("war"),
            "most_confused": {"true": classes[worst[0]], "predicted": classes[worst[1]], "count": int(off[worst])} if worst else None}
