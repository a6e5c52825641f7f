"""``s4d analyze scores``: confusion matrix and per-class recall bars of any ``eval``/``train``/
``cv`` output folder (the paper's Fig. 7), written into ``RUN/analysis/`` by default: a training
run's own files are written only by that run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from preprocess.errors import InputError
from preprocess.manifest import ManifestError, read_json_file
from preprocess.ownership import SUBFOLDER

from ..plots import plot_scores
from .outputs import claim_out


def default_scores_out(run_dir: Path) -> Path:
    """Where ``analyze scores RUN`` writes without ``--out``: ``RUN/analysis``."""
    return Path(run_dir) / SUBFOLDER["analyze"]


def read_summary(run_dir: Path) -> dict[str, Any]:
    """``RUN/summary.json`` with the fields the figures need; any problem is an ``InputError`` naming it."""
    path = Path(run_dir) / "summary.json"
    if not path.is_file():
        raise InputError(f"{path}: no summary.json (give the output folder of s4d eval, train or cv)")
    summary = read_json_file(path)
    if not isinstance(summary, dict):
        raise ManifestError(f"{path}: expected a JSON object; not an s4d evaluation summary")
    for key in ("confusion", "recall", "uar"):
        if key not in summary:
            raise ManifestError(f"{path}: no {key!r} field; not an s4d evaluation summary")
    return summary


def analyze_scores(run_dir: Path, out: Path | None = None, *, force: bool = False) -> dict[str, Any]:
    """Figures of an ``eval``/``train``/``cv`` output folder (its ``summary.json``) in ``out``
    (default ``RUN/analysis``), a folder of kind analyze: never the run folder itself."""
    summary = read_summary(run_dir)
    out = Path(out) if out is not None else default_scores_out(run_dir)
    title = f"{summary.get('manifest', Path(run_dir).name)}: UAR {100 * summary['uar']:.1f}, WAR {100 * summary.get('war', 0):.1f}"
    plots = plot_scores(claim_out(out, "scores", force=force), summary["confusion"], summary["recall"], summary["uar"], title)
    cm = np.asarray(summary["confusion"])
    classes = list(summary["recall"])
    off = cm - np.diag(np.diag(cm))
    worst = np.unravel_index(off.argmax(), off.shape) if off.any() else None
    return {
        "plots": [str(p) for p in plots],
        "uar": summary["uar"],
        "war": summary.get("war"),
        "out": str(out),
        "most_confused": {"true": classes[worst[0]], "predicted": classes[worst[1]], "count": int(off[worst])} if worst else None,
    }
