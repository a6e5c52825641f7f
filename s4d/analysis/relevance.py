"""``s4d analyze relevance``: cosine similarity between class centres (mean pooled encoder
feature per class) of the video classes and the still-image classes (the paper's Fig. 4)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from preprocess.manifest import ManifestError

from ..plots import plot_relevance
from .outputs import write_result


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


def analyze_relevance(collected: dict[str, Any], out: Path, title: str, *, force: bool = False) -> dict[str, Any]:
    """``relevance.json`` and ``relevance.png`` in ``out`` (a folder of kind analyze; earlier ones replaced only with ``force``)."""
    tasks = collected["tasks"]
    if "image" not in tasks:
        raise ManifestError("the manifest names no still-image (sfer) source: task relevance needs both")
    v, i = tasks["video"], tasks["image"]
    v_names, i_names = v["manifest"].classes, i["manifest"].classes
    sim = cosine(class_centres(v["data"].features, v["data"].labels, len(v_names)), class_centres(i["data"].features, i["data"].labels, len(i_names)))
    result = {
        "video_classes": list(v_names),
        "image_classes": list(i_names),
        "cosine": [[None if np.isnan(x) else round(float(x), 6) for x in row] for row in sim],
        "closest_image_class": {c: (i_names[int(np.nanargmax(row))] if not np.isnan(row).all() else None) for c, row in zip(v_names, sim)},
        "samples": {"video": int(len(v["data"].labels)), "image": int(len(i["data"].labels))},
    }
    write_result(out, "relevance", result, force=force)
    result["plot"] = str(plot_relevance(out / "relevance.png", np.nan_to_num(sim), v_names, i_names, title))
    return result
