"""How many CPU cores this process may use: the affinity mask (taskset, cpusets), capped by a
cgroup CPU quota (containers: cgroup v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us``) and by
``SLURM_CPUS_PER_TASK``; shared by the ranks on a node (torchrun's ``LOCAL_WORLD_SIZE``). The
loaders' threads default to it."""

from __future__ import annotations

import math
import os
from pathlib import Path


def _cgroup_quota(root: Path) -> float | None:
    """Cores allowed by the cgroup's CPU quota, or None without one."""
    try:
        v2 = root / "cpu.max"
        if v2.is_file():
            quota, period = v2.read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        quota_file, period_file = root / "cpu" / "cpu.cfs_quota_us", root / "cpu" / "cpu.cfs_period_us"
        if quota_file.is_file() and period_file.is_file():
            quota, period = int(quota_file.read_text()), int(period_file.read_text())
            return None if quota <= 0 else quota / period
    except (OSError, ValueError):
        return None
    return None


def available_cpus(env: dict[str, str] | None = None, cgroup: Path = Path("/sys/fs/cgroup")) -> tuple[int, str]:
    """(cores this process may use, how that was decided)."""
    env = os.environ if env is None else env
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    why = [f"{cores} in the affinity mask"]
    quota = _cgroup_quota(cgroup)
    if quota is not None and math.ceil(quota) < cores:
        cores = max(1, math.ceil(quota))
        why.append(f"cgroup quota {quota:g} cores")
    slurm = env.get("SLURM_CPUS_PER_TASK", "")
    if slurm.isdigit() and 0 < int(slurm) < cores:
        cores = int(slurm)
        why.append(f"SLURM_CPUS_PER_TASK={slurm}")
    return cores, ", ".join(why)


def cpus_per_process(env: dict[str, str] | None = None, cgroup: Path = Path("/sys/fs/cgroup")) -> tuple[int, str]:
    """(cores per rank on this node, why): ``available_cpus`` shared by ``LOCAL_WORLD_SIZE`` ranks."""
    env = os.environ if env is None else env
    cores, why = available_cpus(env, cgroup)
    ranks = max(1, int(env.get("LOCAL_WORLD_SIZE", "1") or 1))
    return max(1, cores // ranks), why + (f", shared by {ranks} ranks" if ranks > 1 else "")
