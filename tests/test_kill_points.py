"""A training run folder survives a kill after any write and a full disk, and checkpoints carry
a format version (issue 23, round 3). Kills are real: ``S4D_FAULT_AFTER_WRITES`` makes the
process SIGKILL itself after its Nth durable write (``preprocess.safe_io.write_point``)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from .test_bad_inputs import ROOT, _file_size_limit, one_error_line, s4d
from .test_train import make_colour_task


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    """(manifest path, data root) of the tiny colour task (16 short videos)."""
    tmp = tmp_path_factory.mktemp("kill")
    m, out = make_colour_task(tmp)
    shutil.copytree(out, tmp / "data" / "colour")
    (tmp / "colour.json").write_text(json.dumps(m.to_dict()))
    return tmp / "colour.json", tmp / "data"


def _train(task, out: Path, epochs: int = 2, **env: str) -> subprocess.CompletedProcess:
    manifest, data = task
    cmd = [
        sys.executable,
        "-m",
        "s4d",
        "train",
        "--manifest",
        str(manifest),
        "--size",
        "debug",
        "--epochs",
        str(epochs),
        "--video-batch",
        "4",
        "--no-sfer",
        "--data-root",
        str(data),
        "--out",
        str(out),
        "--backend",
        "torch",
        "--no-tensorboard",
    ]
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "300", "OMP_NUM_THREADS": "1", **env}
    )


def _metrics(run: Path) -> list[dict]:
    """metrics.jsonl without the wall-clock seconds (the only field that differs between runs)."""
    return [{k: v for k, v in json.loads(x).items() if k != "seconds"} for x in (run / "metrics.jsonl").read_text().splitlines()]


def _assert_same_run(a: Path, b: Path) -> None:
    wa, wb = load_file(a / "checkpoints/last.safetensors"), load_file(b / "checkpoints/last.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)  # bit-identical weights
    assert _metrics(a) == _metrics(b)
    assert json.loads((a / "summary.json").read_text())["uar"] == json.loads((b / "summary.json").read_text())["uar"]
    assert not list((b / "checkpoints").glob("*.tmp"))  # the re-run completed or replaced every half-done save


@pytest.fixture(scope="module")
def straight(task, tmp_path_factory):
    """An uninterrupted 2-epoch run, with the list of its durable writes."""
    run = tmp_path_factory.mktemp("straight") / "run"
    res = _train(task, run, S4D_FAULT_TRACE="1")
    assert res.returncode == 0, res.stderr
    writes = [ln.split(" ", 2)[2] for ln in res.stderr.splitlines() if ln.startswith("s4d-write ")]
    return run, writes


def test_kills_at_the_hard_points_and_a_cut_metrics_line_resume_exactly(task, straight, tmp_path):
    run, writes = straight
    assert sum(w.endswith("checkpoints/last.safetensors") for w in writes) == 2  # one save per epoch
    out = tmp_path / "run"
    # 1. killed between the two renames of epoch 1's weights (new weights, old/no sidecar)
    res = _train(task, out, S4D_FAULT_AFTER_WRITES="1", S4D_FAULT_MATCH="checkpoints/last.safetensors")
    assert res.returncode == -9 and (out / "checkpoints/last.json.tmp").is_file()
    # 2. the re-run completes that save (rename 1 of state.pt), then is killed after epoch 2's commit, before its line
    res = _train(task, out, S4D_FAULT_AFTER_WRITES="2", S4D_FAULT_MATCH="checkpoints/state.pt")
    assert res.returncode == -9 and "resuming from epoch 1" in res.stdout
    assert [r["epoch"] for r in _metrics(out)] == [0]  # epoch 2 saved, its line not yet written
    # 3. the last line is cut short (a kill or a full disk mid-append)
    text = (out / "metrics.jsonl").read_text()
    (out / "metrics.jsonl").write_text(text[: len(text) // 2])
    res = _train(task, out)
    assert res.returncode == 0, res.stderr
    assert f"{out / 'metrics.jsonl'}: dropped its last line, cut short" in res.stdout
    assert "restored the line(s) of epoch 1, 2 from the checkpoint" in res.stdout
    _assert_same_run(run, out)


@pytest.mark.slow
def test_a_kill_after_every_write_of_a_run_resumes_exactly(task, straight, tmp_path):
    run, writes = straight
    for n in range(1, len(writes) + 1):
        out = tmp_path / f"k{n}"
        res = _train(task, out, S4D_FAULT_AFTER_WRITES=str(n))
        assert res.returncode == -9, (n, writes[n - 1], res.stderr)
        res = _train(task, out)
        assert res.returncode == 0, (n, writes[n - 1], res.stderr)
        _assert_same_run(run, out)


def test_a_damaged_metrics_line_before_the_last_is_one_line(task, straight, tmp_path):
    run, _ = straight
    out = tmp_path / "run"
    shutil.copytree(run, out)
    lines = (out / "metrics.jsonl").read_text().splitlines()
    (out / "metrics.jsonl").write_text('{"epoch": 0, "lo\n' + lines[1] + "\n")
    res = _train(task, out, epochs=2)
    line = one_error_line(res.stderr)
    assert res.returncode == 2 and f"{out / 'metrics.jsonl'}: line 1 is not an epoch record" in line


_TRACKER_SCRIPT = """
import sys
from pathlib import Path
from s4d.runtime.tracking import Tracker
t = Tracker(Path(sys.argv[1])).open()
for step in range(3000):
    t.scalars({"train/loss": 0.5, "train/lr": 1e-3}, step)
t.flush()
t.close()
print("finished", t.failed is not None)
"""


def test_a_full_disk_under_tensorboard_is_one_warning_and_training_goes_on(tmp_path):
    """TensorBoard's writer thread hits the file size limit (as a full disk): one warning naming
    the folder, no traceback from any thread, the caller carries on; a re-run is not blocked."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run(
        [sys.executable, "-c", _TRACKER_SCRIPT, str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        preexec_fn=_file_size_limit(4000),
    )
    assert res.returncode == 0 and "finished True" in res.stdout, res.stderr
    assert "Traceback" not in res.stderr and "Exception in thread" not in res.stderr, res.stderr
    warnings = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(warnings) == 1 and warnings[0].startswith(f"warning: {tmp_path / 'run' / 'tensorboard'}: cannot write"), res.stderr
    res = subprocess.run(
        [sys.executable, "-c", _TRACKER_SCRIPT, str(tmp_path / "run")], capture_output=True, text=True, timeout=120, env=env
    )  # space freed: the same folder takes a new writer
    assert res.returncode == 0 and "finished False" in res.stdout and not res.stderr.strip(), res.stderr


def _bad_sidecar(run: Path, tmp_path: Path, change) -> Path:
    """A copy of the run's last checkpoint whose JSON sidecar is edited by ``change(meta)``."""
    dst = tmp_path / "ckpt"
    dst.mkdir()
    shutil.copy(run / "checkpoints/last.safetensors", dst / "m.safetensors")
    meta = json.loads((run / "checkpoints/last.json").read_text())
    change(meta)
    (dst / "m.json").write_text(json.dumps(meta))
    return dst / "m.safetensors"


def _set(path: str, value):
    def change(meta):
        *parents, last = path.split(".")
        node = meta
        for p in parents:
            node = node[p]
        node[last] = value

    return change


@pytest.mark.parametrize(
    "change, expected",
    [
        (_set("format_version", 7), "m.json: checkpoint format version 7 is newer than this s4d reads (up to 1); upgrade s4d"),
        (_set("format_version", "two"), "m.json: format_version 'two' is not a whole number"),
        (
            lambda meta: meta.update(format="s4d-checkpoint/3", format_version=None),
            "m.json: checkpoint format version 3 is newer than this s4d reads",
        ),
        (
            _set("config.encoder.dim", 2048),
            "tensor patch_embed.proj.weight has shape (32, 3, 2, 16, 16) in the file but m.json (encoder.dim 2048) gives (2048, 3, 2, 16, 16)",
        ),
        (_set("config.encoder.depth", 8), "m.json (encoder.depth 8) implies it"),
        (_set("config.encoder.dim", 1 << 16), "m.json: encoder.dim 65536 and encoder.depth 4 ask for more than 2,000,000,000 parameters"),
    ],
    ids=["newer-version", "bad-version", "newer-format", "dim-vs-tensors", "depth-vs-tensors", "too-big"],
)
def test_checkpoint_json_is_checked_before_any_allocation(task, straight, tmp_path, change, expected):
    run, _ = straight
    path = _bad_sidecar(run, tmp_path, change)
    rc, _, err = s4d("eval", "-c", path, "--manifest", task[0], "--data-root", task[1], "--backend", "torch")
    line = one_error_line(err)
    assert rc == 2 and expected in line, line


def test_a_checkpoint_without_format_version_still_loads(straight, tmp_path):
    from s4d import load_model

    run, _ = straight
    path = _bad_sidecar(run, tmp_path, lambda meta: meta.pop("format_version"))
    assert load_model(path).config.encoder.dim == 32


def test_an_onnx_file_given_to_c_is_one_line(tmp_path):
    onnx = tmp_path / "head.onnx"
    onnx.write_bytes(b"\x08\x07")
    rc, _, err = s4d("predict", tmp_path / "v.webm", "-c", onnx)
    line = one_error_line(err)
    assert rc == 2 and f"{onnx} is an ONNX export; use `s4d predict --onnx {onnx}" in line, line
