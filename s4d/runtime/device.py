"""Device resolution and numerics, in one place.

- ``resolve_device("auto" | "cpu" | "cuda[:N]")``: CUDA when present; a CUDA request without a
  device is one clear error. On CUDA it also allows TF32 for fp32 matmuls and convolutions
  (``--amp off`` training and fp32 code paths would otherwise run at a fraction of the tensor
  cores' rate).
- ``autocast_dtype(amp, device)``: ``auto`` is bf16 on CUDA and fp32 on CPU, for training and
  for evaluation alike, so ``s4d eval`` scores what the run's own test scored.
- ``autocast(device, dtype)``: ``torch.autocast`` or a no-op context.
- ``fit_torch_threads(cores)``: torch's intra-op threads at most the cores this process may use
  (torch counts the whole machine, not a container's quota or a SLURM allocation, and ranks on
  one node would each take them all); ``OMP_NUM_THREADS`` or a lower ``torch.set_num_threads``
  made before the run is kept.
"""

from __future__ import annotations

import contextlib
import os

import torch

from preprocess.errors import InputError

AMP_MODES = ("auto", "bf16", "off")


def fit_torch_threads(cores: int, env: dict[str, str] | None = None) -> str:
    """Lower torch's intra-op threads to ``cores`` unless the user chose them; says what it did."""
    env = os.environ if env is None else env
    now = torch.get_num_threads()
    if env.get("OMP_NUM_THREADS"):
        return f"torch {now} threads (OMP_NUM_THREADS={env['OMP_NUM_THREADS']})"
    if now > cores:
        torch.set_num_threads(cores)
        return f"torch {cores} threads (was {now})"
    return f"torch {now} threads"


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when present), ``cpu`` or ``cuda[:N]``."""
    if name == "auto":
        dev = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    elif name == "cpu" or name.startswith("cuda"):
        if name.startswith("cuda") and not torch.cuda.is_available():
            raise InputError(f"--device {name}: no CUDA device is available here")
        try:
            dev = torch.device(name)
        except RuntimeError:
            raise InputError(f"--device must be auto, cpu or cuda[:N], got {name!r}") from None
        if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) here")
    else:
        raise InputError(f"--device must be auto, cpu or cuda[:N], got {name!r}")
    if dev.type == "cuda":
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        enable_tf32()
    return dev


def enable_tf32() -> None:
    """fp32 matmuls and convolutions on TF32 tensor cores (10-bit mantissa products, fp32 sums)."""
    # the legacy switches: setting the new per-backend ``fp32_precision`` makes the legacy
    # getters (which Inductor's autotuning still calls) raise
    torch.set_float32_matmul_precision("high")
    torch.backends.cudnn.allow_tf32 = True


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """bf16 autocast (no loss scaling needed) or None for fp32."""
    if amp not in AMP_MODES:
        raise InputError(f"amp must be one of {', '.join(AMP_MODES)}, got {amp!r}")
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    return torch.bfloat16


def autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def dali_device_id(device: torch.device) -> int | None:
    """DALI decodes (``mixed``) on the GPU the model runs on; None: CPU decoding."""
    return device.index if device.type == "cuda" else None
