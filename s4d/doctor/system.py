"""Does torch use the NVIDIA GPU this machine has? The system's view (``nvidia-smi``, the kernel
driver's ``/proc/driver/nvidia``) against torch's: a GPU the system lists but torch cannot use
is a broken install (most often a wheel built for a newer CUDA than the driver runs), not a
machine without a GPU.

What is read is replaceable for tests: ``PROC_NVIDIA`` (the driver's /proc folder),
``NVIDIA_SMI`` (the command, looked up on ``PATH``) and ``cuda_init_error``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .runner import Context, Fail, Skip

PROC_NVIDIA = Path("/proc/driver/nvidia")
DEV = Path("/dev")  # /dev/nvidia0, ...: the device nodes a process needs to use a GPU
NVIDIA_SMI = "nvidia-smi"
# The oldest driver that runs a CUDA major's wheels (minor-version compatibility: any driver of
# the major's first release runs every 12.x / 13.x build).
MIN_DRIVER = {13: 580, 12: 525, 11: 450}
TORCH_CU12 = "pip install --force-reinstall torch torchvision --index-url https://download.pytorch.org/whl/cu126"
DALI_CU12 = "pip uninstall -y nvidia-dali-cuda130 && pip install 's4d[cuda120]'"


@dataclass(frozen=True)
class SystemGpus:
    names: tuple[str, ...]  # one per GPU the system lists ("?" where the model is not read)
    driver: str | None  # "535.104.05"
    source: str  # "nvidia-smi" or the /proc folder


def _driver_major(driver: str | None) -> int | None:
    m = re.match(r"(\d+)\.", driver or "")
    return int(m.group(1)) if m else None


def from_nvidia_smi(command: str | None = None) -> tuple[SystemGpus | None, str | None]:
    """The GPUs ``nvidia-smi`` lists, or None with what it said when it lists none."""
    exe = shutil.which(command or NVIDIA_SMI)
    if exe is None:
        return None, None
    try:
        res = subprocess.run([exe, "--query-gpu=name,driver_version", "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as err:
        return None, f"nvidia-smi: {err}"
    rows = [[x.strip() for x in line.split(",")] for line in res.stdout.splitlines() if line.strip()]
    rows = [r for r in rows if len(r) >= 2 and re.match(r"\d+\.", r[-1])]
    if res.returncode != 0 or not rows:
        said = (res.stdout + res.stderr).strip().splitlines()
        return None, f"nvidia-smi: {said[0][:160] if said else f'exit {res.returncode}'}"
    return SystemGpus(tuple(", ".join(r[:-1]) for r in rows), rows[0][-1], "nvidia-smi"), None


def from_proc(root: Path | None = None) -> SystemGpus | None:
    """The GPUs the kernel driver has bound (``gpus/<bus id>/information``) and its version."""
    root = Path(root or PROC_NVIDIA)
    gpus = sorted(p for p in (root / "gpus").glob("*") if p.is_dir()) if (root / "gpus").is_dir() else []
    if not gpus:
        return None
    names = []
    for g in gpus:
        try:
            m = re.search(r"^Model:\s*(.+)$", (g / "information").read_text(), re.M)
        except OSError:
            m = None
        names.append(m.group(1).strip() if m else "?")
    try:  # "NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05  Sat Aug 19 ..." (or "Open Kernel Module for x86_64")
        m = re.search(r"NVRM version:.*?\s(\d{3,}\.\d+(?:\.\d+)?)\s", (root / "version").read_text())
    except OSError:
        m = None
    return SystemGpus(tuple(names), m.group(1) if m else None, str(root))


def system_gpus() -> tuple[SystemGpus | None, str | None]:
    """The system's NVIDIA GPUs (nvidia-smi first, then /proc), or None and why none."""
    smi, said = from_nvidia_smi()
    proc = from_proc()
    if smi is not None:
        return smi, None
    if proc is not None:
        # a container started without GPU access still sees the host's /proc/driver/nvidia, but
        # no device nodes: that machine has no GPU to offer, it is not broken
        if not any(DEV.glob("nvidia[0-9]*")):
            return None, f"{proc.source} lists {len(proc.names)} GPU(s) but there is no /dev/nvidia* device node (a container without GPU access)"
        return proc, None
    return None, said


def cuda_init_error() -> str:
    """torch's own words for why CUDA does not start (its first line)."""
    try:
        torch.cuda.init()
    except Exception as err:  # noqa: BLE001 - any failure is the answer
        text = str(err).strip().splitlines()
        return text[0][:200] if text else type(err).__name__
    return "torch.cuda.init() raised nothing"


def diagnose(gpus: SystemGpus, torch_version: str, torch_cuda: str | None, init_error: str) -> tuple[str, dict[str, str]]:
    """Why torch cannot use the GPUs ``gpus`` and the fix: one line, and the fix's commands."""
    seen = f"{len(gpus.names)} NVIDIA GPU(s) ({gpus.names[0]}, driver {gpus.driver or 'version not read'})"
    drv = _driver_major(gpus.driver)
    cuda_major = int(torch_cuda.split(".")[0]) if torch_cuda else None
    need = MIN_DRIVER.get(cuda_major) if cuda_major else None
    fixes: dict[str, str] = {}
    if torch_cuda is None:
        fixes["torch"] = (
            f"pip install --force-reinstall torch torchvision (PyPI's builds use CUDA 13, driver >= {MIN_DRIVER[13]})"
            if drv is not None and drv >= MIN_DRIVER[13]
            else TORCH_CU12
        )
        why = f"the system shows {seen} but torch {torch_version} is a CPU-only build; fix: a CUDA build of torch ({fixes['torch']})"
    elif need and drv is not None and drv < need:
        if drv >= MIN_DRIVER[12]:
            fixes = {"DALI": DALI_CU12, "torch": TORCH_CU12, "or": f"a driver >= {need}"}
            # the Makefile's DALI=cuda120 switches DALI only: PyPI's torch stays a CUDA 13 build
            fix = (
                f"driver >= {need}, or the CUDA 12 wheels: DALI's cuda120 extra (make install DALI=cuda120 in a fresh "
                ".venv), then torch from download.pytorch.org/whl/cu126 (exact commands: s4d doctor --json)"
            )
        else:
            fixes = {"driver": f">= {MIN_DRIVER[12]} (CUDA 12 wheels) or >= {MIN_DRIVER[13]} (CUDA 13, the default)"}
            fix = f"a driver >= {MIN_DRIVER[12]} with the CUDA 12 wheels, or >= {need}"
        why = (
            f"the system shows {seen} but torch cannot use it: torch {torch_version} is built for CUDA {torch_cuda}, "
            f"which needs driver >= {need}; fix: {fix}"
        )
    elif need and drv is None:
        why = (
            f"the system shows {seen} but torch cannot use it: torch {torch_version} is built for CUDA {torch_cuda}, which "
            f"needs driver >= {need}; torch says: {init_error}; fix: check the driver (nvidia-smi), or use the CUDA 12 "
            "wheels for a driver >= 525 (README 'Which DALI wheel')"
        )
        fixes = {"check": "nvidia-smi; cat /proc/driver/nvidia/version", "torch": TORCH_CU12, "DALI": DALI_CU12}
    else:
        why = (
            f"the system shows {seen} and torch {torch_version} (CUDA {torch_cuda}) should run on it, yet finds no "
            f"CUDA device: {init_error}; fix: give this process the GPU (container --gpus, CUDA_VISIBLE_DEVICES) and "
            "check that nvidia-smi works"
        )
        fixes["check"] = "nvidia-smi; echo $CUDA_VISIBLE_DEVICES; python -c 'import torch; torch.cuda.init()'"
    return why, fixes


def torch_sees_gpu(ctx: Context) -> dict[str, Any]:
    """FAIL when the system lists an NVIDIA GPU that torch cannot use (the GPU checks would
    otherwise all be skipped and the doctor pass); skipped on a machine without one."""
    gpus, said = system_gpus()
    if torch.cuda.is_available():
        detail: dict[str, Any] = {"GPUs (torch)": torch.cuda.device_count(), "torch CUDA": torch.version.cuda}
        if gpus is not None:
            detail.update({"GPUs (system)": len(gpus.names), "driver": gpus.driver})
        return detail
    if gpus is None:
        raise Skip("no NVIDIA GPU on this machine" + (f" ({said})" if said else ""))
    hidden = os.environ.get("CUDA_VISIBLE_DEVICES")
    if hidden is not None and hidden.strip() in ("", "-1"):
        raise Skip(f"CUDA_VISIBLE_DEVICES={hidden!r} hides the {len(gpus.names)} NVIDIA GPU(s) from torch")
    ctx.no_cuda = "no CUDA device usable by torch (see the FAIL above)"
    why, fixes = diagnose(gpus, torch.__version__, torch.version.cuda, cuda_init_error())
    raise Fail(
        why,
        {
            "GPUs (system)": list(gpus.names),
            "driver": gpus.driver,
            "read from": gpus.source,
            "torch": torch.__version__,
            "torch CUDA": torch.version.cuda,
            "fix": fixes,
        },
    )
