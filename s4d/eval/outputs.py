"""The one writer of evaluation outputs (``s4d eval``, a training run's test, its selected
checkpoint, a cross-validation's pooled folds): ``summary.json``, ``predictions.parquet`` (one
row per video: key, fold, label, a probability column per class) and the confusion and recall
figures. Every JSON value is valid JSON (``preprocess.safe_json``): the recall of a class
without samples is ``null``, with ``support`` (samples per class) beside it; figures stay a
bounded size however many classes (``plots.plot_scores``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from preprocess.safe_io import open_new, refuse_symlink
from preprocess.safe_json import dumps

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
    pq.write_table(pa.table(columns), refuse_symlink(path))


def write_eval(
    out: Path, summary: dict[str, Any], title: str, *, pred: dict | None = None, fold: str | None = None, classes: tuple[str, ...] = ()
) -> dict[str, Any]:
    """``summary.json`` (``summary``, which holds ``uar``, ``recall`` and ``confusion``), its
    figures and, given ``pred``, ``predictions.parquet``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if pred is not None:
        write_predictions(out / "predictions.parquet", pred, fold or "", classes)
    if isinstance(summary.get("recall"), dict) and "confusion" in summary and "support" not in summary:
        rows = [sum(r) for r in summary["confusion"]]  # samples per true class: why a recall is null
        summary = {**summary, "support": dict(zip(summary["recall"], map(int, rows)))}
    with open_new(out / "summary.json", "w") as f:
        f.write(dumps(summary, indent=2) + "\n")
    plot_scores(out, summary["confusion"], summary["recall"], summary["uar"], title)
    return summary
