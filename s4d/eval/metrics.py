"""Classification metrics of the DFER protocol: WAR (accuracy) and UAR (mean per-class recall),
computed from pooled predictions (never averaged across folds or ranks)."""

from __future__ import annotations

import numpy as np


def confusion(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) counts; row = true class, column = predicted class."""
    labels, preds = np.asarray(labels, dtype=np.int64), np.asarray(preds, dtype=np.int64)
    if labels.shape != preds.shape:
        raise ValueError(f"labels {labels.shape} and predictions {preds.shape} differ in shape")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes or preds.min() < 0 or preds.max() >= num_classes):
        raise ValueError(f"labels/predictions outside 0..{num_classes - 1}")
    return np.bincount(labels * num_classes + preds, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def scores(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> dict:
    """WAR, UAR (over classes present in ``labels``), per-class recall (NaN for absent classes)."""
    cm = confusion(labels, preds, num_classes)
    support = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(support > 0, np.diag(cm) / np.maximum(support, 1), np.nan)
    total = support.sum()
    return {
        "war": float(np.trace(cm) / total) if total else float("nan"),
        "uar": float(np.nanmean(recall)) if (support > 0).any() else float("nan"),
        "recall": recall.tolist(),
        "confusion": cm.tolist(),
        "count": int(total),
    }
