"""``s4d analyze order``: does the model use time? The test split scored with frames in order
and shuffled within each clip."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipelines import Loader, open_dataset
from preprocess.manifest import ManifestError, load_manifest

from ..checkpoint import load_classifier
from ..eval.data import eval_loader_config, shard_folder
from ..eval.metrics import scores
from ..eval.protocol import predict
from ..runtime import autocast_dtype, dali_device_id, resolve_device
from .outputs import write_result


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
def frame_order_test(
    checkpoint: str,
    manifest: str,
    *,
    fold: str | None = None,
    data_root: str | None = None,
    backend: str = "auto",
    batch_size: int = 8,
    seed: int = 0,
    device: str = "auto",
) -> dict[str, Any]:
    """Does the model use time? The test split scored twice: frames in order, and the same
    frames in a random order per clip (never the identity). Classes told apart only by the order
    of their frames fall to chance when shuffled; a model blind to time scores the same both ways."""
    m = load_manifest(manifest)
    model = load_classifier(checkpoint)
    if m.modality != "video":
        raise ManifestError(f"{checkpoint} on {m.name}: the frame-order test needs a video manifest")
    head = tuple(model.config.class_names.get("video", ()))
    if (head and head != m.classes) or model.config.heads["video"] != len(m.classes):
        raise ManifestError(
            f"{checkpoint}: its video head ({', '.join(head) or model.config.heads['video']}) does not "
            f"predict {m.name}'s classes ({', '.join(m.classes)}); the frame-order test needs the same classes"
        )
    dev = resolve_device(device)
    model = model.to(dev).eval()
    fold = m.fold_name(fold)
    ds = open_dataset(m, shard_folder(m, data_root, manifest), fold, "test")
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
    return {
        "classes": list(m.classes),
        "count": int(len(y)),
        "uar": a["uar"],
        "uar_shuffled": b["uar"],
        "recall": dict(zip(m.classes, a["recall"])),
        "recall_shuffled": dict(zip(m.classes, b["recall"])),
    }


def write_frame_order(result: dict[str, Any], out: Path, *, force: bool = False) -> Path:
    """``frame_order.json`` (``frame_order_test``'s result) in ``out``, a folder of kind analyze."""
    return write_result(out, "order", result, force=force)
