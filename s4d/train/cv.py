"""``s4d cv``: every fold of a manifest trained and tested (resumable: finished folds are kept),
then the paper's protocol: the predictions of all folds pooled into one UAR/WAR, with per-fold
mean and std beside it, for the last epochs and (``select`` val/test) the selected checkpoints."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from preprocess.errors import InputError
from preprocess.manifest import Manifest, check_name, load_manifest
from preprocess.safe_json import read_json

from ..eval.metrics import scores
from ..eval.outputs import write_eval
from ..runtime.dist import setup
from ..runtime.rundir import commit_config
from ..runtime.tracking import Tracker
from .config import TrainConfig
from .cost import sum_costs
from .finetune import train
from .select import TEST_SELECTED


def cross_validate(cfg: TrainConfig, log=print) -> dict[str, Any]:
    """Every fold of the manifest (resumable: finished folds are kept), then the paper's
    protocol: predictions of all folds pooled into one UAR/WAR, plus per-fold mean and std, for
    the last epochs and (``select`` val/test) for the selected checkpoints, side by side."""
    m = load_manifest(cfg.manifest)
    out = Path(cfg.out)
    d, _ = setup(cfg.device)
    log = log if d.main else (lambda *_: None)
    commit_config(dataclasses.replace(cfg, fold=None), out, d)  # kept folds must come from the same settings
    per_fold = {}
    for fold in m.folds:
        fold_out = out / f"fold_{check_name(fold, 'folds', m.source or m.name)}"  # stays inside --out
        if (fold_out / "summary.json").is_file():
            log(f"fold {fold}: done before, kept")
        else:
            log(f"fold {fold}: training")
            train(dataclasses.replace(cfg, fold=fold, out=str(fold_out)), log=log)
        per_fold[fold] = read_json(fold_out / "summary.json", f"fold {fold}'s summary")
    if not d.main:
        return {}
    last = _pool_folds(out, m, "predictions.parquet", {f: per_fold[f] for f in m.folds})
    summary = {
        "manifest": m.name,
        "protocol": "predictions of all folds pooled",
        "select": cfg.select,
        "selected_on": "last epoch of each fold",
        **last,
        "cost": sum_costs([per_fold[f].get("cost") or {} for f in m.folds]),
    }
    log(
        f"pooled over {len(m.folds)} folds ({last['count']} videos), last epochs: "
        f"UAR {100 * last['uar']:.2f}  WAR {100 * last['war']:.2f}; "
        f"per fold UAR {100 * last['fold_mean']['uar']:.2f} +- {100 * last['fold_std']['uar']:.2f}"
    )
    if cfg.select == "last":
        summary["selected"] = {"selected_on": "last epoch of each fold", **{k: last[k] for k in ("uar", "war", "count")}}
    else:
        chosen = _pool_folds(out, m, "selected/predictions.parquet", {f: per_fold[f]["selected"] for f in m.folds})
        label = _cv_label(cfg)
        for f in m.folds:
            chosen["folds"][f]["epoch"] = per_fold[f]["selected"]["epoch"]
        summary["selected"] = {"selected_on": label, **chosen}
        write_eval(
            out / "selected",
            {"manifest": m.name, "protocol": summary["protocol"], "selected_on": label, **chosen},
            f"{m.name}, {len(m.folds)} folds pooled, selected",
        )
        log(f"pooled over {len(m.folds)} folds, selected checkpoints [{label}]: UAR {100 * chosen['uar']:.2f}  WAR {100 * chosen['war']:.2f}")
    summary = write_eval(out, summary, f"{m.name}, {len(m.folds)} folds pooled")
    _track_pooled(cfg, out, summary)
    return summary


def _track_pooled(cfg: TrainConfig, out: Path, summary: dict[str, Any]) -> None:
    """The pooled scores and confusion matrix in the cv folder's own tracker run (the folds each
    have theirs in ``fold_<f>/``)."""
    tracker = Tracker(out, tensorboard=cfg.tensorboard, wandb_project=cfg.wandb, config=dataclasses.replace(cfg, fold=None).to_dict())
    tracker.open(-1)  # a re-run pools and logs again: replace, not repeat
    try:
        values = {
            "cv/uar": summary["uar"],
            "cv/war": summary["war"],
            "cv/fold_mean_uar": summary["fold_mean"]["uar"],
            "cv/fold_std_uar": summary["fold_std"]["uar"],
        }
        if cfg.select != "last":
            values.update({"cv/selected_uar": summary["selected"]["uar"], "cv/selected_war": summary["selected"]["war"]})
        tracker.scalars(values, 0)
        tracker.figure("cv/confusion", out / "confusion.png", 0)
    finally:
        tracker.close()


def _cv_label(cfg: TrainConfig) -> str:
    if cfg.select == "test":
        return f"{TEST_SELECTED}: per fold, best top-1 on its test split with one random clip per video, then the 2-clip test"
    return f"per fold, best {cfg.select_metric.upper()} on a held-out {cfg.val_fraction:.0%} of its training fold"


def _pool_folds(out: Path, m: Manifest, name: str, fold_scores: dict[str, dict]) -> dict[str, Any]:
    """Scores of the pooled predictions ``fold_<f>/<name>`` of every fold, with per-fold scores."""
    import pyarrow.parquet as pq

    tables = [pq.read_table(out / f"fold_{f}" / name).to_pydict() for f in fold_scores]
    labels = np.concatenate([t["label"] for t in tables])
    probs = np.concatenate([np.stack([t[f"p_{c}"] for c in m.classes], axis=1) for t in tables])
    keys = [k for t in tables for k in t["key"]]
    if len(set(keys)) != len(keys):
        raise InputError("a video was tested in more than one fold: the folds overlap")
    pooled = scores(labels, probs.argmax(1), len(m.classes))
    uars = [s["uar"] for s in fold_scores.values()]
    wars = [s["war"] for s in fold_scores.values()]
    return {
        "uar": pooled["uar"],
        "war": pooled["war"],
        "count": pooled["count"],
        "recall": dict(zip(m.classes, pooled["recall"])),
        "confusion": pooled["confusion"],
        "folds": {f: {"uar": s["uar"], "war": s["war"], "count": s["count"]} for f, s in fold_scores.items()},
        "fold_mean": {"uar": float(np.mean(uars)), "war": float(np.mean(wars))},
        "fold_std": {"uar": float(np.std(uars)), "war": float(np.std(wars))},
    }
