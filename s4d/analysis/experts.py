"""``s4d analyze experts``: mean gate weight of every expert in every MoAE layer, for video
(DFER) inputs and for still-image (SFER) inputs (the paper's Fig. 5: do the tasks use different
experts?)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from preprocess.manifest import ManifestError

from ..models import Classifier
from ..plots import plot_experts
from .outputs import write_result


def analyze_experts(collected: dict[str, Any], out: Path, title: str, *, force: bool = False) -> dict[str, Any]:
    """``experts.json`` and ``experts.png`` in ``out`` (a folder of kind analyze; earlier ones replaced only with ``force``)."""
    model: Classifier = collected["model"]
    if model.config.moae is None:
        raise ManifestError("this model has no MoAE layers (a plain ViT baseline): nothing to analyse")
    layers = list(model.config.moae.blocks)
    by_task = {task: t["data"].gates.mean(axis=1) for task, t in collected["tasks"].items()}  # (layers, E)
    result = {
        "layers": layers,
        "experts": model.config.moae.num_experts,
        "top_k": model.config.moae.top_k,
        "samples": {task: int(len(t["data"].labels)) for task, t in collected["tasks"].items()},
        "mean_gate": {task: v.round(6).tolist() for task, v in by_task.items()},
    }
    if len(by_task) == 2:  # how differently the tasks route: half the L1 distance of the normalised gate profiles
        v, i = by_task["video"], by_task["image"]
        tv = 0.5 * np.abs(v / v.sum(1, keepdims=True) - i / i.sum(1, keepdims=True)).sum(1)
        result["task_difference"] = dict(zip(map(str, layers), tv.round(6).tolist()))
    write_result(out, "experts", result, force=force)
    result["plot"] = str(plot_experts(out / "experts.png", layers, by_task, title))
    return result
