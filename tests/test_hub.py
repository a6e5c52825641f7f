"""``hf://OWNER/REPO/PATH[@REVISION]`` wherever a checkpoint is accepted, read offline from a
Hub-style cache built here (``HF_HOME`` in a temp folder, ``HF_HUB_OFFLINE=1``)."""

import os
import shutil
import subprocess
import sys

import pytest

from tests.test_bad_inputs import ROOT, one_error_line
from tests.test_predict import NAMES, debug_checkpoint, demo_video

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def hub_cache(tmp_path, files):
    """The cache layout huggingface_hub reads: hub/models--OWNER--REPO/{refs/main, snapshots/<commit>/...}."""
    home = tmp_path / "hf"
    repo = home / "hub" / "models--s4d-test--tiny"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    snapshot = repo / "snapshots" / COMMIT
    for name, src in files.items():
        (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, snapshot / name)
    return home


def hub_run(args, home, **kw):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HOME": str(home), "HF_HUB_OFFLINE": "1", "COLUMNS": "300"}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300, env=env, **kw)


def test_a_checkpoint_loads_and_predicts_through_hf_paths(tmp_path):
    ckpt = debug_checkpoint(tmp_path)
    home = hub_cache(tmp_path, {"weights/model.safetensors": ckpt, "weights/model.json": ckpt.with_suffix(".json")})
    code = (
        "from s4d import load_model; import sys\n"
        "for spec in sys.argv[1:]:\n    m = load_model(spec); print(type(m).__name__, m.config.class_names['video'])\n"
    )
    res = hub_run(["-c", code, "hf://s4d-test/tiny/weights/model.safetensors", f"hf://s4d-test/tiny/weights/model.safetensors@{COMMIT}"], home)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == [f"Classifier {NAMES}"] * 2  # the sidecar came along: names and config
    video, _ = demo_video(tmp_path, frames=20)
    res = hub_run(["-m", "s4d", "predict", str(video), "-c", "hf://s4d-test/tiny/weights/model.safetensors", "--no-align"], home)
    assert res.returncode == 0 and res.stdout.split(": ")[1].split()[0] in NAMES, res.stderr


@pytest.mark.parametrize(
    "spec,named",
    [
        ("hf://s4d-test/tiny/weights/other.safetensors", "cannot fetch from the Hugging Face Hub"),
        ("hf://s4d-test/only-two", "expected hf://OWNER/REPO/PATH[@REVISION]"),
    ],
)
def test_a_bad_hf_path_is_one_line(tmp_path, spec, named):
    ckpt = debug_checkpoint(tmp_path)
    home = hub_cache(tmp_path, {"weights/model.safetensors": ckpt})
    video, _ = demo_video(tmp_path, frames=20)
    res = hub_run(["-m", "s4d", "predict", str(video), "-c", spec, "--no-align"], home)
    line = one_error_line(res.stderr)
    assert res.returncode == 2 and named in line and spec.replace("hf://", "hf:/") in line.replace("hf://", "hf:/")


def test_export_hub_writes_an_upload_folder_whose_card_labels_every_score(tmp_path):
    """A run with --select val exported (best and last); the card's Hub metadata parses and its
    scores are the run's; the exported file loads through hf:// and equals the run's checkpoint."""
    import json

    from huggingface_hub import metadata_load

    from s4d.train.finetune import train
    from tests.test_bad_inputs import s4d
    from tests.test_train import _run_cfg, make_colour_task

    m, shards = make_colour_task(tmp_path / "task")
    data = tmp_path / "data"
    shutil.copytree(shards, data / "colour")
    run = tmp_path / "run"
    summary = train(_run_cfg(m, data / "colour", tmp_path, out=str(run), epochs=2, select="val", val_fraction=0.25), log=lambda *_: None)
    rc, out, err = s4d("export-hub", run, "-o", tmp_path / "up", "--checkpoint", "best")
    assert rc == 0, err
    up = tmp_path / "up"
    assert sorted(p.name for p in up.iterdir()) == [
        "README.md",
        "confusion.png",
        "model.json",
        "model.safetensors",
        "recall.png",
        "summary.json",
        "training_config.json",
    ]
    meta = metadata_load(up / "README.md")  # the Hub's own parser of the card's front matter
    metrics = {m_["name"]: m_["value"] for m_ in meta["model-index"][0]["results"][0]["metrics"]}
    assert metrics == {
        "UAR (last epoch)": round(100 * summary["uar"], 2),
        "WAR (last epoch)": round(100 * summary["war"], 2),
        "UAR (val-selected (this file))": round(100 * summary["selected"]["uar"], 2),
        "WAR (val-selected (this file))": round(100 * summary["selected"]["war"], 2),
    }
    card = (up / "README.md").read_text()
    assert "selected epoch" in card and "held-out 25% of the training fold" in card and "warm, cold" in card
    assert json.loads((up / "training_config.json").read_text())["select"] == "val"
    assert json.loads((up / "model.json").read_text())["epoch"] == summary["selected"]["epoch"]

    home = hub_cache(tmp_path, {"model.safetensors": up / "model.safetensors", "model.json": up / "model.json"})
    code = (
        "from s4d import load_model; import sys, torch\n"
        "a, b = load_model(sys.argv[1]).state_dict(), load_model(sys.argv[2]).state_dict()\n"
        "print(sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a))\n"
    )
    res = hub_run(["-c", code, "hf://s4d-test/tiny/model.safetensors", str(run / "checkpoints" / "best.safetensors")], home)
    assert res.returncode == 0 and res.stdout.strip() == "True", res.stderr

    rc, _, err = s4d("export-hub", run, "-o", tmp_path / "up_last")  # the last epoch, labelled as such
    assert rc == 0 and "**last epoch**" in (tmp_path / "up_last" / "README.md").read_text(), err
    rc, _, err = s4d("export-hub", tmp_path / "missing", "-o", tmp_path / "x")
    assert rc == 2 and "no such run folder" in one_error_line(err)
    (tmp_path / "cv" / "fold_1" / "checkpoints").mkdir(parents=True)
    rc, _, err = s4d("export-hub", tmp_path / "cv", "-o", tmp_path / "x")
    assert rc == 2 and "one model per fold" in one_error_line(err) and "fold_1" in one_error_line(err)
