"""The one writer of evaluation outputs (``s4d eval``, a training run's test, its selected
checkpoint, a cross-validation's pooled folds): ``summary.json``, ``predictions.parquet`` (one
row per video: key, fold, label, a probability column per class) and the confusion and recall
figures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..plots import plot_scores
from .metrics import scores


def score_fields(pred: dict, classes: tuple[str, ...]) -> dict[str, Any]:
    """UAR, WAR, per-class recall by name, confusion and count of pooled predictions."""
    s = scores(pred["labels"], pred["probs"].argmax(1), len(classes))
    return {"uar": s["uar"], "war": s["war"], "recall": dict(zip(classes, s["recall"])), "confusion": s["confusion"], "count": s["count"]}


def write_predictions(path: Path, pred: dict, fold: str, classes: tuple[str, ...]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = {"key": pred["keys"], "fold": [fold] * len(pred["keys"]), "label": pred["labels"].tolist()}
    for c, name in enumerate(classes):
        columns[f"p_{name}"] = pred["probs"][:, c].tolist()
    pq.write_table(pa.table(columns), path)


def write_eval(out: Path, summary: dict[str, Any], title: str, *, pred: dict | None = None, fold: str | None = None,
               classes: tuple[str, ...] = ()) -> dict[str, Any]:
    """``summary.json`` (``summary``, which holds ``uar``, ``recall`` and ``confusion``), its
    figures and, given ``pred``, ``predictions.parquet``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if pred is not None:
        write_predictions(out / "predictions.parquet", pred, fold or "", classes)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot_scores(out, summary["confusion"], summary["recall"], summary["uar"], title)
    return summary
