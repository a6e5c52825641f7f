"""Weights and answers are finite, and weights are the bytes that were saved.

``first_nonfinite`` walks a checkpoint object (a flat state dict or the authors' nested one)
and names the first floating tensor holding NaN or inf; ``tensor_digest`` is the sha256 our
``.safetensors`` carry in their JSON sidecar (one pass over the tensor bytes, no copies);
``NonFiniteOutput`` is the one-line error of a command whose model answered NaN or inf.
"""

from __future__ import annotations

import hashlib
from typing import Any, Iterator

import numpy as np
import torch

from preprocess.errors import InputError


class NonFiniteOutput(InputError):
    """A model gave NaN or inf for an input; the message names the input and the weights."""


def check_finite(values: np.ndarray, what: str, keys: list[str] | None = None) -> np.ndarray:
    """``values`` (N, ...) when every row is finite; else ``NonFiniteOutput`` naming ``what``
    and, given the rows' ``keys``, how many rows and the first one (also in ``err.key``, for
    the caller to name its shard)."""
    ok = np.isfinite(values.reshape(len(values), -1)).all(axis=1) if len(values) else np.ones(0, bool)
    if ok.all():
        return values
    if keys is None:
        raise NonFiniteOutput(f"{what} answered NaN or inf; the weights are damaged or the model overflows on this input")
    bad = np.flatnonzero(~ok)
    err = NonFiniteOutput(
        f"{what} answered NaN or inf for {len(bad)} of {len(ok)} sample(s), first "
        f"{keys[bad[0]]!r}; the weights are damaged or the model overflows on this data"
    )
    err.key = keys[bad[0]]
    raise err


def _tensors(obj: Any, prefix: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    if isinstance(obj, torch.Tensor):
        yield prefix or "<tensor>", obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from _tensors(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            yield from _tensors(value, f"{prefix}.{i}" if prefix else str(i))


def first_nonfinite(obj: Any) -> str | None:
    """The name of the first floating tensor in ``obj`` with a NaN or inf, or None."""
    for name, t in _tensors(obj):
        if (t.is_floating_point() or t.is_complex()) and t.numel() and not bool(torch.isfinite(t).all()):
            return name
    return None


def tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in name order: independent of how
    the file lays them out, and read straight from the tensors' memory (CPU tensors)."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach()
        h.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        if t.numel():
            h.update(memoryview(t.contiguous().reshape(-1).view(torch.uint8).numpy()))
    return h.hexdigest()
