"""``s4d analyze scores``: confusion matrix and per-class recall bars of any ``eval``/``train``/
``cv`` output folder (the paper's Fig. 7)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from preprocess.manifest import ManifestError

from ..plots import plot_scores


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
