"""The procedural demo dataset and ``make demo``'s run: learning, time, predict, analyses."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from s4d.demo.faces import APEX, VIDEO_CLASSES, expression_track, make_clip, make_image, write_dataset


def test_order_only_classes_are_the_same_frames_reversed():
    onset, offset = expression_track("happy_onset", 32), expression_track("happy_offset", 32)
    assert offset == onset[::-1] and onset[0] != onset[-1]
    assert onset[-1]["smile"] == pytest.approx(APEX["happy"]["smile"])


def test_clips_and_images_vary_in_identity_and_expression():
    rng = np.random.default_rng(0)
    clips = {c: make_clip(c, rng) for c in VIDEO_CLASSES}
    assert all(c.shape == (32, 64, 64, 3) and c.dtype == np.uint8 for c in clips.values())
    surprise = clips["surprise"].astype(int)
    assert np.abs(surprise[-1] - surprise[0]).mean() > 2  # the face changes over the clip
    a, b = make_image("happy", rng), make_image("happy", rng)
    assert a.shape == (72, 72, 3) and np.abs(a.astype(int) - b).mean() > 10  # different identities


def test_dataset_is_a_users_csv_dataset(tmp_path):
    from preprocess.own_data import manifest_from_csv

    videos, images = write_dataset(tmp_path, clips_per_class=5, images_per_class=3)
    vm = manifest_from_csv(videos, align=False)
    im = manifest_from_csv(images, align=False)
    assert vm.modality == "video" and set(vm.classes) == set(VIDEO_CLASSES) and vm.partitions == ("test", "train")
    assert im.modality == "image" and len(im.classes) == 4
    rows = videos.read_text().splitlines()[1:]
    assert len(rows) == 20 and sum(r.endswith(",test") for r in rows) == 4  # every fifth clip of a class is held out


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """``make demo``'s whole run, once for the module (a few minutes on 2 cores)."""
    from s4d.demo.run import run_demo

    root = tmp_path_factory.mktemp("demo")
    return root, run_demo(root, log=lambda *_: None)


def test_demo_learns_the_expressions(demo):
    _, summary = demo
    assert summary["uar"] > 0.5 and summary["war"] > 0.5  # chance: 0.25
    assert summary["count"] == 120


def test_shuffling_the_frames_hurts_the_classes_that_differ_only_in_order(demo):
    """happy_onset and happy_offset are the same frames in opposite order: a model blind to time
    scores at most 50% on them together. Trained, it beats that; shuffled frames take it away."""
    _, summary = demo
    order = summary["analysis"]["frame_order"]
    pair = ("happy_onset", "happy_offset")
    in_order = sum(order["recall"][c] for c in pair)
    shuffled = sum(order["recall_shuffled"][c] for c in pair)
    assert in_order > 1.1
    assert shuffled < in_order - 0.2
    assert order["uar"] == pytest.approx(summary["uar"])  # the same test set and model as training's own test


def test_predict_timeline_on_a_new_face(demo):
    root, summary = demo
    story = json.loads(Path(summary["timeline"]["json"]).read_text())
    assert story["frames"] == 128 and all(w["face"] for w in story["windows"])
    assert Path(summary["timeline"]["plot"]).read_bytes()[:4] == b"\x89PNG"
    # the window that covers the "surprise" part (frames 64-95) exactly as a test clip would
    surprise = next(w for w in story["windows"] if w["start_frame"] == 64)
    assert surprise["top"] == "surprise" and surprise["probs"]["surprise"] > 0.5


def test_analyses_of_the_demo_model(demo):
    root, summary = demo
    experts = json.loads((root / "analysis" / "experts.json").read_text())
    assert experts["layers"] == [2, 3] and experts["experts"] == 8
    for task in ("video", "image"):
        gates = np.asarray(experts["mean_gate"][task])
        assert gates.shape == (2, 8) and np.allclose(gates.sum(1), 1.0, atol=1e-4)  # top-k weights sum to 1 per token
    assert set(experts["samples"]) == {"video", "image"}
    relevance = json.loads((root / "analysis" / "relevance.json").read_text())
    sim = np.asarray(relevance["cosine"])
    assert sim.shape == (4, 4) and np.all(np.abs(sim) <= 1 + 1e-6)
    assert relevance["closest_image_class"]["surprise"] == "surprise"
    for name in ("experts.png", "relevance.png"):
        assert (root / "analysis" / name).stat().st_size > 5000


def test_analyze_commands(demo, tmp_path):
    root, summary = demo
    run = root / "runs" / "train"
    scores = run_cli("analyze", "scores", str(run), "--out", str(tmp_path))
    assert scores.returncode == 0, scores.stderr
    assert (tmp_path / "confusion.png").is_file() and (tmp_path / "recall.png").is_file()
    cm = np.asarray(json.loads((run / "summary.json").read_text())["confusion"])
    off = cm - np.diag(np.diag(cm))
    if off.any():
        assert f"({off.max()} samples)" in scores.stdout
    common = [
        "-c",
        summary["checkpoint"],
        "-m",
        str(root / "manifests" / "demo_videos.json"),
        "--data-root",
        str(root / "data"),
        "--out",
        str(tmp_path),
    ]
    experts = run_cli("analyze", "experts", *common, "--limit", "40")
    assert experts.returncode == 0, experts.stderr
    assert json.loads((tmp_path / "experts.json").read_text())["samples"] == {"video": 40, "image": 40}
    missing = run_cli("analyze", "scores", str(tmp_path / "nothing"))
    assert missing.returncode == 2 and "summary.json" in missing.stderr and len(missing.stderr.strip().splitlines()) == 1


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "s4d", *args], capture_output=True, text=True)
