"""``s4d doctor`` on this machine: without CUDA every GPU check is skipped and the CPU ones pass."""

import json
import subprocess
import sys
import time

import pytest
import torch

GPU_CHECKS = {"DALI GPU decode (mixed)", "GPU vs CPU decode", "GPU augmentation", "loader vs model", "flash attention (bf16)"}


def test_doctor_runs_every_check_and_skips_the_gpu_ones_without_cuda():
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "s4d", "doctor", "--json"], capture_output=True, text=True, timeout=600)
    seconds = time.perf_counter() - t0
    results = json.loads(res.stdout)
    by_name = {r["name"]: r for r in results}
    assert set(by_name) >= GPU_CHECKS | {"environment", "shards (160 px, written here)", "DALI CPU decode", "PyTorch loader decode",
                                         "MoAE bf16 grouped kernel", "step loop host syncs", "process group", "fine-tune + MAE epoch"}
    assert all(set(r) >= {"name", "status", "detail"} for r in results)
    failed = [r for r in results if r["status"].startswith("FAIL")]
    assert res.returncode == (1 if failed else 0)
    assert not failed, failed
    if not torch.cuda.is_available():
        for name in GPU_CHECKS:
            assert by_name[name]["status"].startswith("skipped: "), by_name[name]
        assert by_name["DALI GPU decode (mixed)"]["status"] == "skipped: no CUDA device"
        assert all(by_name[n]["status"] == "ok" for n in by_name if n not in GPU_CHECKS)
    assert by_name["shards (160 px, written here)"]["detail"]["clips"] == 16
    assert by_name["process group"]["detail"]["backend"] == ("cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo")
    assert by_name["PyTorch loader decode"]["detail"]["mean abs difference to DALI (normalised units)"] < 0.08
    assert seconds < 180, f"doctor took {seconds:.0f} s (bound: 3 minutes on a 2-core CPU)"


def test_doctor_rows_name_every_check_and_a_failure_is_one_line(tmp_path):
    from s4d.doctor import Skip, run_checks

    def broken(ctx):
        raise KeyError("shards.json")

    def skipped(ctx):
        raise Skip("not here")

    results = run_checks([("a", lambda ctx: {"x": 1}), ("b", broken), ("c", skipped), ("d", lambda ctx: ctx.need("nothing"))],
                         torch.device("cpu"), root=tmp_path)
    assert [r.status for r in results] == ["ok", "FAIL: KeyError: 'shards.json'", "skipped: not here",
                                           "skipped: needs the nothing check, which did not pass"]
    assert results[0].detail == {"x": 1} and results[1].failed and not results[2].failed


@pytest.mark.gpu
def test_doctor_passes_every_check_on_a_gpu():
    res = subprocess.run([sys.executable, "-m", "s4d", "doctor", "--json"], capture_output=True, text=True, timeout=900)
    results = json.loads(res.stdout)
    assert res.returncode == 0 and all(r["status"] == "ok" for r in results), [r for r in results if r["status"] != "ok"]
