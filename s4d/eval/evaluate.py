"""``s4d eval``: a checkpoint on a manifest's test set, with the test protocol, per-class recall
and a confusion matrix; cross-task evaluation (the image head on videos and back, the paper's
Table IX) maps classes by their canonical names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipelines import Loader, open_dataset
from preprocess.manifest import ManifestError, load_manifest
from preprocess.ownership import check, claim

from ..checkpoint import load_classifier
from ..checkpoint.finite import NonFiniteOutput
from ..runtime import autocast_dtype, dali_device_id
from ..runtime.dist import setup
from .data import eval_loader_config, shard_folder
from .outputs import score_fields, write_eval
from .protocol import predict

# DFER and AffectNet name the same expressions differently.
CANONICAL = {"happy": "happiness", "sad": "sadness", "angry": "anger"}


def canonical(name: str) -> str:
    return CANONICAL.get(name.lower(), name.lower())


def head_columns(manifest_classes: tuple[str, ...], head_classes: tuple[str, ...]) -> list[int | None]:
    """For each manifest class, the head's column with the same canonical name (or None)."""
    index = {canonical(c): i for i, c in enumerate(head_classes)}
    return [index.get(canonical(c)) for c in manifest_classes]


def shard_of(ds, key: str | None) -> str:
    """The tar holding sample ``key`` (the shard folder's index), or the dataset's first tar."""
    loc = ds.reader.locations.get(key) if key is not None else None
    paths = ds.reader.paths
    return str(paths[loc.shard]) if loc is not None else (str(Path(paths[0]).parent) if paths else "the test set")


def evaluate_checkpoint(
    manifest: str,
    checkpoint: str,
    *,
    out: str,
    fold: str | None = None,
    task: str | None = None,
    data_root: str | None = None,
    backend: str = "auto",
    batch_size: int = 8,
    force: bool = False,
    log=print,
) -> dict[str, Any]:
    """Score ``checkpoint``'s ``task`` head on ``manifest``'s test split of ``fold`` and write
    ``out`` (``write_eval``). ``out`` must be an eval folder (``preprocess.ownership``): never a
    training run's; one holding earlier eval outputs only with ``force``, which replaces them."""
    m = load_manifest(manifest)
    _, device = setup()
    model = load_classifier(checkpoint).to(device)
    task = task or m.modality
    if task not in model.head:
        raise ManifestError(f"{checkpoint}: no {task!r} head (heads: {sorted(model.head)})")
    head_names = tuple(model.config.class_names.get(task, ())) or None
    if head_names is None and task != m.modality:
        raise ManifestError(
            f"{checkpoint}: the {task} head has no class names, so its classes cannot be matched to "
            f"{m.name}'s; cross-task evaluation needs a checkpoint trained by s4d (names in its config)"
        )
    if head_names is None and model.config.heads[task] != len(m.classes):
        raise ManifestError(f"{checkpoint}: the {task} head has {model.config.heads[task]} classes and no class names; {m.name} has {len(m.classes)}")
    check(Path(out), "eval", force=force)  # refused before the work: a run's folder, another owner, earlier outputs
    enc = model.config.encoder
    fold = m.fold_name(fold)
    ds = open_dataset(m, shard_folder(m, data_root, manifest), fold, "test")
    cfg = eval_loader_config(m, enc, batch_size)
    loader = Loader(ds, cfg, backend=backend, device_id=dali_device_id(device))
    try:
        pred = predict(model, loader.epoch(0), task, device, autocast_dtype("auto", device))  # bf16 on CUDA, as the run's own test
    except NonFiniteOutput as err:  # name the checkpoint and the shard of the first bad sample
        raise NonFiniteOutput(f"{checkpoint} on {shard_of(ds, getattr(err, 'key', None))}: {err}") from None

    excluded = 0
    if head_names is not None and head_names != m.classes:  # cross-task: map columns by name
        cols = head_columns(m.classes, head_names)
        keep = np.array([cols[y] is not None for y in pred["labels"]])
        excluded = int((~keep).sum())
        probs = np.stack([pred["probs"][:, c] if c is not None else np.zeros(len(pred["keys"])) for c in cols], axis=1)
        pred = {"keys": [k for k, ok in zip(pred["keys"], keep) if ok], "labels": pred["labels"][keep], "probs": probs[keep]}
    s = score_fields(pred, m.classes)
    summary = {
        "manifest": m.name,
        "fold": fold,
        "checkpoint": str(checkpoint),
        "task_head": task,
        "uar": s["uar"],
        "war": s["war"],
        "count": s["count"],
        "excluded_no_matching_class": excluded,
        "recall": s["recall"],
        "confusion": s["confusion"],
    }
    write_eval(claim(Path(out), "eval", force=force), summary, f"{m.name} fold {fold} ({task} head)", pred=pred, fold=fold, classes=m.classes)
    log(
        f"{m.name} fold {fold}, {task} head: UAR {100 * s['uar']:.2f}  WAR {100 * s['war']:.2f} over {s['count']} samples"
        + (f" ({excluded} without a matching class left out)" if excluded else "")
    )
    return summary
