"""A fine-tuning run's test: the fold's test set scored by the test protocol with the last
epoch's weights and, with model selection, the selected epoch's; ``summary.json`` reports both
side by side, honestly labelled, and ``selected/`` holds the selected epoch's own outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipelines import Loader
from preprocess import safe_json
from preprocess.safe_io import open_new

from ..checkpoint import load_model
from ..eval.outputs import score_fields, write_eval
from ..eval.protocol import pool, predict
from ..runtime.dist import barrier, gather
from .cost import finetune_cost, safely
from .select import LAST, TEST_SELECTED


def evaluate_run(run, out: Path, log=print) -> dict[str, Any]:
    """Test the finished ``finetune.Run``; rank 0 writes the outputs and every rank leaves only
    once they are on disk."""
    summary: dict[str, Any] = {}
    sel = run.selector
    run.cost = safely(lambda: finetune_cost(run)) if run.dist.main else None  # train.cost: FLOPs and parameters
    if run.test_ds is None:
        summary = {
            "fold": run.fold,
            "epochs": run.cfg.epochs,
            "select": run.cfg.select,
            "note": "no test partition in this fold",
            "selected": _selection_fields(run),
            "cost": run.cost,
        }
        if run.dist.main:
            with open_new(out / "summary.json", "w") as f:
                f.write(safe_json.dumps(summary, indent=2) + "\n")
    else:
        test = Loader(run.test_ds, run.test_cfg, rank=run.dist.rank, world=run.dist.world, backend=run.cfg.backend, device_id=run.device_id)
        last = pool(gather(predict(run.model, test.epoch(0), "video", run.device, run.autocast), run.dist))  # pool, never average
        best = None
        if sel is not None and sel.epoch is not None:
            if sel.epoch == run.cfg.epochs - 1:
                best = last
            else:
                run.model.load_state_dict(load_model(sel.path).state_dict())
                best = pool(gather(predict(run.model, test.epoch(0), "video", run.device, run.autocast), run.dist))
        if run.dist.main:
            summary = _write_test_outputs(run, out, last, best, log)
    barrier(run.dist)
    return summary


def _selection_fields(run) -> dict[str, Any]:
    sel = run.selector
    if sel is None:
        return {"epoch": run.cfg.epochs - 1, "selected_on": LAST}
    return {"epoch": sel.epoch, "selected_on": sel.label(), "metric": sel.metric, "score": sel.score if sel.epoch is not None else None}


def _write_test_outputs(run, out: Path, last: dict, best: dict | None, log) -> dict[str, Any]:
    """``summary.json`` (the last epoch, with ``last`` and ``selected`` side by side),
    ``predictions.parquet`` and plots; the selected epoch's own in ``selected/``."""
    classes, name = run.manifest.classes, run.manifest.name
    s = score_fields(last, classes)
    chosen = _selection_fields(run)
    if run.selector is None:
        chosen.update(s)
    elif best is not None:
        chosen.update(score_fields(best, classes))
        write_eval(
            out / "selected",
            {"fold": run.fold, "select": run.cfg.select, **chosen},
            f"{name} fold {run.fold}, {_short_label(run)}",
            pred=best,
            fold=run.fold,
            classes=classes,
        )
    summary = {
        "fold": run.fold,
        "select": run.cfg.select,
        "epoch": run.cfg.epochs - 1,
        "selected_on": LAST,
        **s,
        "last": {"epoch": run.cfg.epochs - 1, "uar": s["uar"], "war": s["war"], "count": s["count"]},
        "selected": {k: v for k, v in chosen.items() if k not in ("recall", "confusion")},
        "cost": run.cost,
    }
    write_eval(out, summary, f"{name} fold {run.fold}", pred=last, fold=run.fold, classes=classes)
    log(f"test ({s['count']} videos), last epoch: UAR {100 * s['uar']:.2f}  WAR {100 * s['war']:.2f}")
    if run.selector is not None and best is not None:
        log(f"test, selected epoch {chosen['epoch'] + 1} [{_short_label(run)}]: UAR {100 * chosen['uar']:.2f}  WAR {100 * chosen['war']:.2f}")
    return summary


def _short_label(run) -> str:
    return {"val": f"val-selected ({run.selector.metric.upper()} on a held-out {run.cfg.val_fraction:.0%})", "test": TEST_SELECTED}.get(
        run.cfg.select, "last epoch"
    )
