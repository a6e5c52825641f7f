"""``s4d doctor`` on this machine: without CUDA every GPU check is skipped and the CPU ones pass."""

import json
import shutil
import subprocess
import sys
import time

import pytest
import torch

GPU_CHECKS = {
    "GPU visible to torch",
    "DALI GPU decode (mixed)",
    "GPU vs CPU decode",
    "GPU augmentation",
    "loader vs model",
    "flash attention (bf16)",
    "--compile step",
    "DDP, 2 GPUs",
    "MTCNN on CUDA",
}
CAT = shutil.which("cat")  # for the fake nvidia-smi, whose PATH may hold only its own folder


def test_doctor_runs_every_check_and_skips_the_gpu_ones_without_cuda():
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "s4d", "doctor", "--json"], capture_output=True, text=True, timeout=600)
    seconds = time.perf_counter() - t0
    results = json.loads(res.stdout)
    by_name = {r["name"]: r for r in results}
    assert set(by_name) >= GPU_CHECKS | {
        "environment",
        "shards (160 px, written here)",
        "DALI CPU decode",
        "PyTorch loader decode",
        "loader + model (train_epoch)",
        "MoAE bf16 grouped kernel",
        "step loop host syncs",
        "process group",
        "fine-tune + MAE epoch",
    }
    assert all(set(r) >= {"name", "status", "detail"} for r in results)
    failed = [r for r in results if r["status"].startswith("FAIL")]
    assert res.returncode == (1 if failed else 0)
    assert not failed, failed
    if not torch.cuda.is_available():
        for name in GPU_CHECKS:
            assert by_name[name]["status"].startswith("skipped: "), by_name[name]
        assert by_name["DALI GPU decode (mixed)"]["status"] == "skipped: no CUDA device"
        for name in ("--compile step", "DDP, 2 GPUs", "MTCNN on CUDA"):
            assert by_name[name]["status"] == "skipped: no CUDA device"
        assert by_name["GPU visible to torch"]["status"].startswith("skipped: no NVIDIA GPU on this machine")
        assert all(by_name[n]["status"] == "ok" for n in by_name if n not in GPU_CHECKS)
    assert by_name["shards (160 px, written here)"]["detail"]["clips"] == 16
    assert by_name["process group"]["detail"]["backend"] == ("cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo")
    assert by_name["PyTorch loader decode"]["detail"]["mean abs difference to DALI (normalised units)"] < 0.08
    joint = by_name["loader + model (train_epoch)"]["detail"]  # the real loop fed by the real loader
    assert joint["steps"] == (24 if torch.cuda.is_available() else 12) and joint["clips/s"] > 0
    assert "% of step time" in joint["waiting for input"] and joint["bound by"] in ("input", "the model")
    assert seconds < 180, f"doctor took {seconds:.0f} s (bound: 3 minutes on a 2-core CPU)"


def test_doctor_rows_name_every_check_and_a_failure_is_one_line(tmp_path):
    from s4d.doctor import Skip, run_checks

    def broken(ctx):
        raise KeyError("shards.json")

    def skipped(ctx):
        raise Skip("not here")

    results = run_checks(
        [("a", lambda ctx: {"x": 1}), ("b", broken), ("c", skipped), ("d", lambda ctx: ctx.need("nothing"))], torch.device("cpu"), root=tmp_path
    )
    assert [r.status for r in results] == [
        "ok",
        "FAIL: KeyError: 'shards.json'",
        "skipped: not here",
        "skipped: needs the nothing check, which did not pass",
    ]
    assert results[0].detail == {"x": 1} and results[1].failed and not results[2].failed


@pytest.mark.gpu
def test_doctor_passes_every_check_on_a_gpu():
    res = subprocess.run([sys.executable, "-m", "s4d", "doctor", "--json"], capture_output=True, text=True, timeout=900)
    results = json.loads(res.stdout)
    assert res.returncode == 0 and all(r["status"] == "ok" for r in results), [r for r in results if r["status"] != "ok"]


# ---------------------------------------------------------------- a GPU the system shows, torch cannot use
def _fake_proc(root, driver="535.104.05", models=("NVIDIA H100 80GB HBM3",), nodes=True):
    """The kernel driver's /proc/driver/nvidia layout: version, and one folder per bound GPU."""
    root.mkdir(parents=True)
    (root / "version").write_text(
        f"NVRM version: NVIDIA UNIX x86_64 Kernel Module  {driver}  Sat Aug 19 01:15:15 UTC 2023\n"
        "GCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n"
    )
    for i, model in enumerate(models):
        g = root / "gpus" / f"0000:{i + 1:02x}:00.0"
        g.mkdir(parents=True)
        g.joinpath("information").write_text(f"Model: \t\t {model}\nIRQ:   \t\t 42\nGPU UUID: \t GPU-1234\nBus Type: \t PCIe\n")
    if nodes:  # the device nodes beside it (/dev/nvidia0, ...), as the tests' DEV folder
        from s4d.doctor import system

        system.DEV.mkdir(parents=True, exist_ok=True)
        for i in range(len(models)):
            system.DEV.joinpath(f"nvidia{i}").touch()
    return root


def _fake_smi(folder, out="NVIDIA H100 80GB HBM3, 570.86.15", code=0):
    """An ``nvidia-smi`` that answers the doctor's query (or fails as one without a driver)."""
    folder.mkdir(parents=True, exist_ok=True)
    exe = folder / "nvidia-smi"
    (folder / "nvidia-smi.out").write_text(out + "\n")
    exe.write_text(f'#!/bin/sh\n{CAT} "$0.out"\nexit {code}\n')  # PATH may hold this folder alone
    exe.chmod(0o755)
    return folder


@pytest.fixture
def no_gpu(tmp_path, monkeypatch):
    """A machine as the doctor reads it: no nvidia-smi on PATH, an empty /proc/driver/nvidia,
    torch without a CUDA device, built for CUDA 13.0 (PyPI's wheels)."""
    from s4d.doctor import system

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(system, "PROC_NVIDIA", tmp_path / "proc" / "driver" / "nvidia")
    monkeypatch.setattr(system, "DEV", tmp_path / "dev")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(system, "cuda_init_error", lambda: "Found no NVIDIA driver on your system.")
    return bin_dir


def _run(tmp_path):
    from s4d.doctor import run_checks
    from s4d.doctor.checks import CHECKS

    checks = dict(CHECKS)
    names = ["GPU visible to torch", "flash attention (bf16)", "MTCNN on CUDA"]
    return run_checks([(n, checks[n]) for n in names], torch.device("cpu"), root=tmp_path / "work")


def test_a_gpu_in_proc_that_torch_cannot_use_is_a_fail_with_the_fix(no_gpu, tmp_path):
    from s4d.doctor import system

    _fake_proc(system.PROC_NVIDIA)  # driver 535: too old for CUDA 13 wheels, fine for CUDA 12
    results = _run(tmp_path)
    seen, skipped = results[0], results[1:]
    assert seen.failed and seen.status.startswith("FAIL: the system shows 1 NVIDIA GPU(s) (NVIDIA H100 80GB HBM3, driver 535.104.05)")
    assert "built for CUDA 13.0, which needs driver >= 580" in seen.status and "cuda120" in seen.status and "cu126" in seen.status
    assert "\n" not in seen.status and seen.detail["fix"]["DALI"].endswith("pip install 's4d[cuda120]'")
    assert seen.detail["read from"] == str(system.PROC_NVIDIA) and seen.detail["driver"] == "535.104.05"
    assert [r.status for r in skipped] == ["skipped: no CUDA device usable by torch (see the FAIL above)"] * 2


def test_a_container_without_gpu_access_is_skipped_not_failed(no_gpu, tmp_path):
    """The host's /proc/driver/nvidia shows through, but no /dev/nvidia* node: nothing to use."""
    from s4d.doctor import system

    _fake_proc(system.PROC_NVIDIA, nodes=False)
    seen = _run(tmp_path)[0]
    assert not seen.failed and seen.status.startswith("skipped: no NVIDIA GPU on this machine (")
    assert "no /dev/nvidia* device node" in seen.status


def test_a_gpu_that_nvidia_smi_lists_is_read_from_the_fake_on_path(no_gpu, tmp_path):
    from s4d.doctor import system

    _fake_smi(no_gpu)  # nvidia-smi wins over /proc (none here)
    gpus, _ = system.system_gpus()
    assert gpus == system.SystemGpus(("NVIDIA H100 80GB HBM3",), "570.86.15", "nvidia-smi")
    seen = _run(tmp_path)[0]
    assert seen.failed and "driver 570.86.15" in seen.status and "needs driver >= 580" in seen.status


def test_the_fail_names_a_cpu_only_torch_and_an_unexplained_one(no_gpu, tmp_path, monkeypatch):
    from s4d.doctor import system

    _fake_proc(system.PROC_NVIDIA, driver="580.65.06", models=("NVIDIA H200", "NVIDIA H200"))
    seen = _run(tmp_path)[0]  # driver and wheel fit, yet no device: torch's own words, and where to look
    assert seen.failed and "2 NVIDIA GPU(s) (NVIDIA H200, driver 580.65.06)" in seen.status
    assert "should run on it, yet finds no CUDA device: Found no NVIDIA driver on your system." in seen.status
    monkeypatch.setattr(torch.version, "cuda", None)
    seen = _run(tmp_path)[0]
    assert seen.failed and "is a CPU-only build" in seen.status and "pip install --force-reinstall torch torchvision" in seen.status


def test_no_gpu_at_all_still_skips(no_gpu, tmp_path, monkeypatch):
    results = _run(tmp_path)  # nothing on PATH, no /proc/driver/nvidia
    assert [r.status for r in results] == ["skipped: no NVIDIA GPU on this machine", "skipped: no CUDA device", "skipped: no CUDA device"]
    _fake_smi(no_gpu, "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.", code=9)
    assert _run(tmp_path)[0].status == (
        "skipped: no NVIDIA GPU on this machine (nvidia-smi: NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.)"
    )
    from s4d.doctor import system

    _fake_proc(system.PROC_NVIDIA)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert _run(tmp_path)[0].status == "skipped: CUDA_VISIBLE_DEVICES='' hides the 1 NVIDIA GPU(s) from torch"


def test_doctor_exits_1_on_a_gpu_torch_cannot_use(tmp_path):
    """The whole command, with a fake nvidia-smi on PATH: the FAIL row, exit code 1."""
    import os

    if torch.cuda.is_available():
        pytest.skip("torch uses a GPU here")
    bin_dir = _fake_smi(tmp_path / "bin", "NVIDIA A100-SXM4-40GB, 535.104.05")
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    res = subprocess.run([sys.executable, "-m", "s4d", "doctor"], capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 1, res.stdout[-2000:]
    row = next(x for x in res.stdout.splitlines() if x.startswith("GPU visible to torch"))
    assert "FAIL: the system shows 1 NVIDIA GPU(s) (NVIDIA A100-SXM4-40GB, driver 535.104.05)" in row
    assert "failed: GPU visible to torch" in res.stdout.splitlines()[-1]


def test_proc_version_lines_of_both_kernel_modules(tmp_path):
    from s4d.doctor import system

    root = _fake_proc(tmp_path / "a", nodes=False)  # from_proc alone: no device nodes needed
    (root / "version").write_text(
        "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.159.04  Release Build  (dvs-builder@U22-I3-AE18-23-3)  Tue Oct 14 2025\n"
    )
    assert system.from_proc(root).driver == "580.159.04"
    (root / "gpus" / "0000:01:00.0" / "information").unlink()  # a GPU folder without its information file
    assert system.from_proc(root).names == ("?",)
    assert system.from_proc(tmp_path / "none") is None
    (root / "version").unlink()  # a driver whose version is not read: the FAIL says what torch needs and said
    gpus = system.from_proc(root)
    why, fixes = system.diagnose(gpus, "2.14.1+cu130", "13.0", "CUDA driver initialization failed")
    assert gpus.driver is None and "driver version not read" in why and "needs driver >= 580" in why
    assert "torch says: CUDA driver initialization failed" in why and "cu126" in fixes["torch"]


# ---------------------------------------------------------------- the GPU-only checks, driven on the CPU
def test_the_ddp_and_compile_checks_run_their_work_on_cpu(tmp_path):
    """What the DDP and ``--compile`` checks run on a GPU machine, run here on the CPU: a real
    2-process ``s4d train`` (gloo) on the doctor's shards, and compiled steps (dynamo with the
    eager backend: tracing and graph breaks, no Inductor)."""
    from s4d.doctor import Context
    from s4d.doctor.data import write_shards
    from s4d.doctor.gpu_runs import compiled_steps, ddp_train

    ctx = Context(tmp_path, torch.device("cpu"))
    write_shards(ctx)
    ddp = ddp_train(ctx, "debug")
    assert ddp["processes"] == 2 and ddp["steps per process"] >= 2  # 16 train clips / 2 ranks / batch 4, + image batches
    comp = compiled_steps(torch.device("cpu"), backend="eager", steps=2)
    assert comp["graph breaks"] == 0 and comp["graphs"] >= 1 and comp["step ms compiled"] > 0


def test_waited_counts_time_in_next_and_clips():
    from s4d.doctor.joint import Waited

    def slow():
        for _ in range(3):
            time.sleep(0.05)
            yield {"pixels": torch.zeros(4, 1)}

    w = Waited(slow())
    assert sum(1 for _ in w) == 3 and w.clips == 12 and 0.14 < w.seconds < 1.0
