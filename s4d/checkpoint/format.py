"""Our checkpoint file format, and reading any checkpoint file safely.

``NAME.safetensors`` (weights) + ``NAME.json`` (``format``, the ``config`` that rebuilds the
model, what training recorded: epoch, fold, ``input`` settings, selection, and ``sha256`` of the
tensors, ``finite.tensor_digest``, checked on load; ~0.3 s for a 383 MiB base model). Foreign files
(``.pt``/``.pth``/``.bin``) are read with ``torch.load(weights_only=True)``: tensors and plain
data only. Every error names the file.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from .finite import first_nonfinite, tensor_digest
from .hub import resolve
from .keymap import CheckpointError

FORMAT = "s4d-checkpoint/1"
# Harmless non-tensor objects that training scripts (VideoMAE-style) save beside the weights.
_SAFE_GLOBALS = [argparse.Namespace, *(g for g in (getattr(np, "dtype", None),) if g is not None)]


def sidecar(path: Path) -> Path:
    return path.with_suffix(".json")


def save_checkpoint(model: nn.Module, path: str | os.PathLike, extra: dict[str, Any] | None = None) -> Path:
    """Write ``path`` (.safetensors) and its ``.json`` config atomically; returns the path."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"checkpoint path must end in .safetensors, got {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    # The digest lets a load tell a damaged or edited file from the one written here. The file's
    # own header carries it too: a kill between the two renames below pairs these weights with
    # the previous save's sidecar, which is a torn save (``resume`` deals with it), not damage.
    digest = tensor_digest(tensors)
    meta = {"format": FORMAT, "config": model.config.to_dict(), **(extra or {}), "sha256": digest}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, tmp, metadata={"format": FORMAT, "sha256": digest})
    tmp_json = sidecar(path).with_name(sidecar(path).name + ".tmp")
    tmp_json.write_text(json.dumps(meta, indent=2) + "\n")
    os.replace(tmp, path)
    os.replace(tmp_json, sidecar(path))
    return path


def checkpoint_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The whole JSON sidecar of our checkpoint (config plus what training recorded, such as
    ``input``: clip stride and preprocessing); ``{}`` for foreign files."""
    path = resolve(path)
    meta_path = sidecar(path)
    if Path(path).suffix != ".safetensors" or not meta_path.is_file():
        return {}
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{meta_path}: not a valid S4D config sidecar ({_first_line(err)})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{meta_path}: not a valid S4D config sidecar (not an object)")
    return meta


def read_checkpoint(path: str | os.PathLike) -> tuple[Any, dict[str, Any] | None]:
    """Return (raw checkpoint object, our config dict or None). Errors name the file. An
    ``hf://`` path is fetched through the Hub's cache first (``hub``). In a ``.safetensors``
    every floating tensor must be finite (the first that is not is named; foreign ``.pt`` files
    are checked by ``load`` on the tensors it maps), and our files whose sidecar records a
    ``sha256`` must still hold those tensors (a file without one, older or foreign, loads as before)."""
    path = resolve(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.suffix == ".safetensors":
        try:
            tensors = load_file(path)
        except (SafetensorError, OSError, ValueError) as err:
            raise CheckpointError(f"{path}: not a readable safetensors file ({_first_line(err)})") from None
        meta_path = sidecar(path)
        config, recorded = None, None
        if meta_path.is_file():
            try:
                meta = json.loads(meta_path.read_text())
                config, recorded = meta["config"], meta.get("sha256")
            except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as err:
                raise CheckpointError(f"{meta_path}: not a valid S4D config sidecar ({_first_line(err)})") from None
        check_weights_finite(path, tensors)
        if recorded is not None:
            actual = tensor_digest(tensors)
            if actual != recorded and _header_digest(path) != actual:
                raise CheckpointError(f"{path}: has been modified or damaged since it was saved: sha256 {actual[:16]}... != "
                                      f"recorded {str(recorded)[:16]}... (in {meta_path.name}); use an intact copy")
        return tensors, config
    try:
        with torch.serialization.safe_globals(_SAFE_GLOBALS):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch.load fails on garbage with any exception type (IndexError, ...)
        text = str(err)
        if "Weights only load failed" in text:
            found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
            what = f" ({found[1]})" if found else ""
            raise CheckpointError(f"{path}: holds a Python object that safe loading refuses{what}; only tensors and plain data are read") from None
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({_first_line(err)})") from None
    return obj, None  # its weights are checked once mapped (``load``): optimizer state and the like may hold inf


def _header_digest(path: Path) -> str | None:
    """The sha256 a save wrote into the file's own header (None for older or foreign files)."""
    try:
        with safe_open(path, "pt") as f:
            return (f.metadata() or {}).get("sha256")
    except (SafetensorError, OSError, ValueError):
        return None


def check_weights_finite(path: Path | str, obj: Any) -> None:
    bad = first_nonfinite(obj)
    if bad is not None:
        raise CheckpointError(f"{path}: tensor {bad} holds NaN or inf values: the weights are damaged (or the run "
                              "diverged); use an intact copy")


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:200] if text else type(err).__name__
