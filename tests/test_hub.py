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


def run(args, home, **kw):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HOME": str(home), "HF_HUB_OFFLINE": "1", "COLUMNS": "300"}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300, env=env, **kw)


def test_a_checkpoint_loads_and_predicts_through_hf_paths(tmp_path):
    ckpt = debug_checkpoint(tmp_path)
    home = hub_cache(tmp_path, {"weights/model.safetensors": ckpt, "weights/model.json": ckpt.with_suffix(".json")})
    code = ("from s4d import load_model; import sys\n"
            "for spec in sys.argv[1:]:\n    m = load_model(spec); print(type(m).__name__, m.config.class_names['video'])\n")
    res = run(["-c", code, "hf://s4d-test/tiny/weights/model.safetensors", f"hf://s4d-test/tiny/weights/model.safetensors@{COMMIT}"], home)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == [f"Classifier {NAMES}"] * 2  # the sidecar came along: names and config
    video, _ = demo_video(tmp_path, frames=20)
    res = run(["-m", "s4d", "predict", str(video), "-c", "hf://s4d-test/tiny/weights/model.safetensors", "--no-align"], home)
    assert res.returncode == 0 and res.stdout.split(": ")[1].split()[0] in NAMES, res.stderr


@pytest.mark.parametrize("spec,named", [("hf://s4d-test/tiny/weights/other.safetensors", "cannot fetch from the Hugging Face Hub"),
                                        ("hf://s4d-test/only-two", "expected hf://OWNER/REPO/PATH[@REVISION]")])
def test_a_bad_hf_path_is_one_line(tmp_path, spec, named):
    ckpt = debug_checkpoint(tmp_path)
    home = hub_cache(tmp_path, {"weights/model.safetensors": ckpt})
    video, _ = demo_video(tmp_path, frames=20)
    res = run(["-m", "s4d", "predict", str(video), "-c", spec, "--no-align"], home)
    line = one_error_line(res.stderr)
    assert res.returncode == 2 and named in line and spec.replace("hf://", "hf:/") in line.replace("hf://", "hf:/")
