"""Model selection (``--select last|val|test``) on the debug model and generated shards."""

import json
import shutil

import numpy as np
import pytest
import torch

from pipelines import Loader, LoaderConfig, open_dataset
from pipelines.plan import epoch_batches
from s4d.eval import predict, scores
from s4d.train import OptimConfig
from s4d.train.select import TEST_SELECTED, Selector, holdout_split

from .test_train import _run_cfg, colour_task  # noqa: F401  (colour_task is a fixture)

QUIET = lambda *_: None  # noqa: E731


def test_holdout_split_is_stratified_seeded_and_disjoint():
    labels = np.array([0] * 10 + [1] * 5 + [2] * 1 + [3] * 2)
    kept, held = holdout_split(labels, 0.2, seed=3)
    assert np.bincount(labels[held], minlength=4).tolist() == [2, 1, 0, 1]  # round(0.2 n), >= 1, never a whole class
    assert not set(kept) & set(held) and sorted([*kept, *held]) == list(range(len(labels)))
    assert list(held) == sorted(held) and list(kept) == sorted(kept)
    again = holdout_split(labels, 0.2, seed=3)[1]
    assert np.array_equal(held, again)  # a pure function of (labels, fraction, seed): every rank and resume agree
    assert any(not np.array_equal(held, holdout_split(labels, 0.2, seed=s)[1]) for s in range(4, 8))


def test_selector_keeps_the_first_best_epoch(monkeypatch, tmp_path):
    from s4d.runtime.dist import Dist
    from s4d.train import select

    labels = np.array([0, 0, 1, 1])
    preds = {0: [0, 0, 0, 0], 1: [0, 0, 1, 1], 2: [0, 1, 1, 1], 3: [0, 0, 1, 1]}  # UAR .5, 1, .75, 1
    per_epoch = {e: np.eye(2)[p] for e, p in preds.items()}
    monkeypatch.setattr(select, "predict", lambda model, epoch, *a: {"keys": list("abcd"), "labels": labels, "probs": per_epoch[epoch]})

    class Epochs:
        def epoch(self, e):
            return e

    sel = Selector("val", "uar", Epochs(), 2, tmp_path, Dist(), torch.device("cpu"), None, fraction=0.1)
    seen = [(sel.evaluate(None, e)["val_uar"], sel.improved) for e in range(4)]
    assert seen == [(0.5, True), (1.0, True), (0.75, False), (1.0, False)]  # ties keep the earlier epoch
    assert sel.state() == {"mode": "val", "epoch": 1, "score": 1.0}
    test = Selector("test", "uar", Epochs(), 2, tmp_path, Dist(), torch.device("cpu"), None)
    assert test.metric == "war" and test.evaluate(None, 2) == {"test_one_clip_top1": 0.75, "best_epoch": 2}
    assert test.label().startswith(TEST_SELECTED)


def test_random_clip_evaluation_draws_one_start_per_video_and_epoch(colour_task):
    m, out = colour_task
    ds = open_dataset(m, out, role="test")
    cfg = LoaderConfig(batch_size=4, train=False, size=64, frames=4, stride=2, random_clip=True)
    starts = [np.concatenate([b.starts for b in epoch_batches(ds, cfg, epoch=e)]) for e in range(6)]
    assert starts[0].shape == (4, 1) and all(0 <= s <= 12 - 8 for s in np.concatenate(starts).ravel())  # 12 frames, window 8
    assert len({tuple(s.ravel()) for s in starts}) > 1  # redrawn per epoch
    by_rank = [epoch_batches(ds, cfg, epoch=0, rank=r, world=2) for r in (0, 1)]
    two = {int(p): int(s) for bs in by_rank for b in bs for p, s in zip(b.positions, b.starts.ravel())}
    assert two == {i: int(s) for i, s in enumerate(starts[0].ravel())}  # the draw belongs to the video, not the rank
    batch = next(Loader(ds, cfg, backend="torch").epoch(0))
    assert batch["pixels"].shape == (4, 1, 3, 4, 64, 64)
    protocol = LoaderConfig(batch_size=4, train=False, size=64, frames=4, stride=2)
    assert next(Loader(ds, protocol, backend="torch").epoch(0))["pixels"].shape[1] == 2  # the 2-clip test protocol


def _data(colour_task, tmp_path):
    m, out = colour_task
    shutil.copytree(out, tmp_path / "data" / "colour")
    return m, tmp_path / "data" / "colour"


def _val_cfg(m, shards, tmp_path, name, **kw):
    base = dict(out=str(tmp_path / name), epochs=5, video_batch=2, select="val", val_fraction=0.25, optim=OptimConfig(base_lr=1e-2, warmup_epochs=0))
    return _run_cfg(m, shards, tmp_path, **{**base, **kw})


def _metrics(run):
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_select_val_holds_out_a_stratified_part_and_keeps_the_best_epoch(colour_task, tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    from s4d import load_model
    from s4d.train import finetune

    m, shards = _data(colour_task, tmp_path)
    trained: set[str] = set()
    real = finetune.train_epoch

    def spy(model, batches, *a, **kw):
        def seen():
            for task, b in batches:
                trained.update(b["keys"])
                yield task, b

        return real(model, seen(), *a, **kw)

    monkeypatch.setattr(finetune, "train_epoch", spy)
    lines = []
    summary = finetune.train(_val_cfg(m, shards, tmp_path, "val"), log=lines.append)
    run = tmp_path / "val"
    held = json.loads((run / "holdout.json").read_text())
    assert held["fraction"] == 0.25 and held["seed"] == 0
    full = open_dataset(m, shards, role="train")
    label_of = dict(zip(full.keys, full.labels))
    assert sorted(label_of[k] for k in held["keys"]) == [0, 0, 1, 1]  # round(0.25 x 6) of each class
    assert trained == set(full.keys) - set(held["keys"])  # trained on the rest, never on the held-out clips
    assert json.loads((run / "config.json").read_text())["select"] == "val"

    metrics = _metrics(run)
    uars = [x["val_uar"] for x in metrics]
    best = int(np.argmax(uars))  # the first best
    assert [x["best_epoch"] for x in metrics][-1] == best and best != len(metrics) - 1  # this run peaks before the end
    sel = summary["selected"]
    assert sel["epoch"] == best and sel["score"] == uars[best] and sel["metric"] == "uar"
    assert sel["selected_on"] == "best UAR on a held-out 25% of the training fold"
    assert summary["last"]["epoch"] == 4 and summary["uar"] == summary["last"]["uar"] and summary["selected_on"].startswith("last epoch")
    meta = json.loads((run / "checkpoints" / "best.json").read_text())
    assert meta["epoch"] == best and meta["select"] == "val" and meta["input"]["stride"] == 2  # usable by s4d predict

    model = load_model(run / "checkpoints" / "best.safetensors")  # the best weights score what the log says
    held_ds = full.subset([full.keys.index(k) for k in held["keys"]])
    test_cfg = LoaderConfig(batch_size=4, train=False, size=64, frames=4, stride=2)
    pred = predict(model, Loader(held_ds, test_cfg, backend="torch").epoch(0), "video")
    assert scores(pred["labels"], pred["probs"].argmax(1), 2)["uar"] == uars[best]

    table = pq.read_table(run / "selected" / "predictions.parquet").to_pydict()
    again = scores(np.asarray(table["label"]), np.stack([table["p_warm"], table["p_cold"]], 1).argmax(1), 2)
    assert again["uar"] == sel["uar"] and again["war"] == sel["war"] and sel["count"] == 4
    assert json.loads((run / "selected" / "summary.json").read_text())["uar"] == sel["uar"]
    assert (run / "selected" / "confusion.png").is_file()
    assert any("4 of 12 training clips held out" in x for x in lines) and any("val-selected" in x for x in lines)


def test_select_val_resume_is_exact_and_repairs_a_missing_best(colour_task, tmp_path):
    from s4d import load_model
    from s4d.train.finetune import train

    m, shards = _data(colour_task, tmp_path)
    straight = train(_val_cfg(m, shards, tmp_path, "straight"), log=QUIET)
    cfg = _val_cfg(m, shards, tmp_path, "resumed")
    assert train(cfg, stop_after_epochs=1, log=QUIET) is None
    ckpt = tmp_path / "resumed" / "checkpoints"
    first = _metrics(tmp_path / "resumed")[0]["val_uar"]
    assert torch.load(ckpt / "state.pt", weights_only=True)["selection"] == {"mode": "val", "epoch": 0, "score": first}
    for name in ("best.safetensors", "best.json"):  # as if killed after the state was saved, before the best weights
        (ckpt / name).unlink()
    resumed = train(cfg, log=QUIET)
    for name in ("last", "best"):
        a = load_model(tmp_path / "straight" / "checkpoints" / f"{name}.safetensors").state_dict()
        b = load_model(ckpt / f"{name}.safetensors").state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), name  # bit-identical
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(_metrics(tmp_path / "straight")) == strip(_metrics(tmp_path / "resumed"))
    assert resumed["selected"] == straight["selected"] and resumed["last"] == straight["last"]
    assert (tmp_path / "straight" / "holdout.json").read_text() == (tmp_path / "resumed" / "holdout.json").read_text()

    with pytest.raises(ValueError, match=r"different settings \(select\)"):
        train(_val_cfg(m, shards, tmp_path, "resumed", select="last"), log=QUIET)
    with pytest.raises(ValueError, match=r"different settings \(val_fraction\)"):
        train(_val_cfg(m, shards, tmp_path, "resumed", val_fraction=0.5), log=QUIET)
    meta = json.loads((ckpt / "best.json").read_text())
    assert meta["epoch"] != 4
    (ckpt / "best.json").write_text(json.dumps({**meta, "epoch": 3}))
    with pytest.raises(ValueError, match=r"holds epoch 3 but the run's state selected epoch"):
        train(cfg, log=QUIET)


def test_select_test_is_labelled_as_the_authors_protocol(colour_task, tmp_path):
    from s4d.train.finetune import train

    m, shards = _data(colour_task, tmp_path)
    lines = []
    summary = train(_run_cfg(m, shards, tmp_path, out=str(tmp_path / "t"), epochs=2, select="test"), log=lines.append)
    run = tmp_path / "t"
    assert summary["select"] == "test" and summary["selected"]["selected_on"].startswith(TEST_SELECTED)
    assert summary["selected"]["metric"] == "war" and summary["selected"]["count"] == 4  # then the 2-clip test on all 4
    assert json.loads((run / "selected" / "summary.json").read_text())["selected_on"].startswith(TEST_SELECTED)
    assert json.loads((run / "checkpoints" / "best.json").read_text())["selected_on"].startswith(TEST_SELECTED)
    metrics = _metrics(run)
    assert all("test_one_clip_top1" in x for x in metrics) and not (run / "holdout.json").exists()
    assert summary["selected"]["score"] == max(x["test_one_clip_top1"] for x in metrics)
    epoch_lines = [x for x in lines if x.startswith("epoch ")]
    assert len(epoch_lines) == 2 and all(TEST_SELECTED in x for x in epoch_lines)
    assert any(x.startswith("test, selected epoch") and TEST_SELECTED in x for x in lines)


def test_cv_reports_pooled_last_and_pooled_selected(tmp_path):
    import pyarrow.parquet as pq
    from typer.testing import CliRunner

    from s4d.cli import app

    from .media_factory import moving_square, write_video

    raw = tmp_path / "raw"
    raw.mkdir()
    rows = ["path,label,fold"]
    for i in range(9):
        clip = moving_square(8, 64, 64, seed=i)
        write_video(raw / f"v{i}.webm", clip if i % 2 == 0 else clip[..., ::-1].copy())
        rows.append(f"v{i}.webm,{'warm' if i % 2 == 0 else 'cold'},{'abc'[i % 3]}")
    (raw / "list.csv").write_text("\n".join(rows) + "\n")
    runner = CliRunner()
    res = runner.invoke(
        app,
        [
            "shards",
            "--csv",
            str(raw / "list.csv"),
            "--no-align",
            "--size",
            "64",
            "--frames",
            "4",
            "--stride",
            "2",
            "--data-root",
            str(tmp_path / "data"),
        ],
    )
    assert res.exit_code == 0, res.output
    args = [
        "cv",
        "--manifest",
        str(tmp_path / "data" / "list" / "manifest.json"),
        "--size",
        "debug",
        "--epochs",
        "2",
        "--video-batch",
        "2",
        "--no-sfer",
        "--data-root",
        str(tmp_path / "data"),
        "--out",
        str(tmp_path / "cv"),
        "--backend",
        "torch",
        "--select",
        "test",
        "--lr",
        "1e-2",
    ]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "cv" / "summary.json").read_text())
    assert summary["select"] == "test" and summary["selected_on"] == "last epoch of each fold"
    sel = summary["selected"]
    assert sel["selected_on"].startswith(TEST_SELECTED) and sel["count"] == 9 and set(sel["folds"]) == set("abc")

    def pooled(name):
        tables = [pq.read_table(tmp_path / "cv" / f"fold_{f}" / name).to_pydict() for f in "abc"]
        labels = np.concatenate([t["label"] for t in tables])
        return scores(labels, np.concatenate([np.stack([t["p_cold"], t["p_warm"]], 1) for t in tables]).argmax(1), 2)

    assert pooled("predictions.parquet")["uar"] == pytest.approx(summary["uar"])
    assert pooled("selected/predictions.parquet")["uar"] == pytest.approx(sel["uar"])
    assert pooled("selected/predictions.parquet")["war"] == pytest.approx(sel["war"])
    for f in "abc":
        fold = json.loads((tmp_path / "cv" / f"fold_{f}" / "summary.json").read_text())
        assert sel["folds"][f]["epoch"] == fold["selected"]["epoch"] and sel["folds"][f]["uar"] == fold["selected"]["uar"]
    assert json.loads((tmp_path / "cv" / "selected" / "summary.json").read_text())["uar"] == sel["uar"]
    assert "selected checkpoints [test-selected (as the authors)" in res.output and "last epochs: UAR" in res.output
