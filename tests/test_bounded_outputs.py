"""Outputs that scale with the number of classes stay bounded and valid: a 1,000-class
evaluation through the one writer (``s4d.eval.outputs.write_eval``) draws small figures in
little memory, and its ``summary.json`` is strict JSON (``null`` where a recall has no samples,
the sample count beside it)."""

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from preprocess.safe_json import dumps, finite

ROOT = Path(__file__).resolve().parents[1]


def _strict(text: str):
    def refuse(name):
        raise ValueError(f"not valid JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def test_non_finite_floats_become_null_and_the_writer_refuses_any_that_slip():
    value = {"a": float("nan"), "b": [float("inf"), -float("inf"), 1.5], "c": np.float32("nan"), "d": np.array([1.0, np.nan])}
    assert finite(value) == {"a": None, "b": [None, None, 1.5], "c": None, "d": [1.0, None]}
    assert _strict(dumps(value)) == {"a": None, "b": [None, None, 1.5], "c": None, "d": [1.0, None]}
    with pytest.raises(ValueError):
        _strict(json.dumps({"a": float("nan")}))  # what we wrote before: not JSON


SCRIPT = textwrap.dedent("""
    import json, resource, sys
    from pathlib import Path
    import numpy as np
    from s4d.eval.outputs import score_fields, write_eval

    out, classes_n = Path(sys.argv[1]), int(sys.argv[2])
    rng = np.random.default_rng(0)
    classes = tuple(f"class_{i:04d}" for i in range(classes_n))
    labels = np.arange(3000) % (classes_n // 2)  # half the classes have no sample
    probs = rng.random((3000, classes_n)).astype(np.float32)
    probs[np.arange(3000) % 3 == 0, labels[np.arange(3000) % 3 == 0]] = 2.0  # a third right
    pred = {"keys": [f"v{i}" for i in range(3000)], "labels": labels, "probs": probs}
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    write_eval(out, {"fold": "1", **score_fields(pred, classes)}, "synthetic", pred=pred, fold="1", classes=classes)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"before_kib": before, "after_kib": after}))
""")


@pytest.mark.parametrize("classes_n", [1000])
def test_a_thousand_class_eval_is_small_and_valid_json(tmp_path, classes_n):
    from PIL import Image

    res = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path), str(classes_n)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "MPLBACKEND": "Agg"},
    )
    assert res.returncode == 0, res.stderr
    mem = json.loads(res.stdout.strip().splitlines()[-1])
    assert mem["after_kib"] - mem["before_kib"] < 500_000, mem  # the writer's peak adds < 0.5 GB (was 23 GB)
    for name in ("confusion.png", "recall.png"):
        with Image.open(tmp_path / name) as img:
            w, h = img.size
        assert w * h <= 4_000_000 and max(w, h) <= 4000, (name, w, h)
    summary = _strict((tmp_path / "summary.json").read_text())  # raises on NaN / Infinity
    assert len(summary["recall"]) == classes_n and len(summary["support"]) == classes_n
    empty = [c for c, n in summary["support"].items() if n == 0]
    assert len(empty) == classes_n // 2
    assert all(summary["recall"][c] is None for c in empty)
    assert all(isinstance(summary["recall"][c], float) for c, n in summary["support"].items() if n)
    assert sum(summary["support"].values()) == summary["count"] == 3000
    assert math.isfinite(summary["uar"])


def test_the_big_confusion_figure_shows_the_most_confused_classes_and_says_so(tmp_path, monkeypatch):
    from s4d import plots

    titles = []
    monkeypatch.setattr(plots, "_save", lambda fig, path, dpi=120: titles.append(fig.axes[0].get_title()) or path)
    cm = np.eye(80, dtype=np.int64) * 5
    cm[3, 70] = cm[70, 3] = 9  # the confusions: classes 3 and 70 first
    cm[10, 11] = 4
    assert list(plots.most_confused(cm, 3)) == [3, 10, 70]
    plots.plot_confusion(tmp_path / "c.png", cm, tuple(f"c{i}" for i in range(80)), "big")
    assert "30 most-confused of 80 classes" in titles[-1]
    plots.plot_confusion(tmp_path / "c.png", np.eye(7, dtype=np.int64), tuple("abcdefg"), "small")
    assert titles[-1] == "small"


def test_a_summary_read_back_with_null_recalls_still_plots(tmp_path):
    from s4d.plots import plot_scores

    paths = plot_scores(tmp_path, [[2, 0], [0, 0]], {"a": 1.0, "b": None}, None, "read back")
    assert all(p.is_file() for p in paths)
