"""Our checkpoint file format, and reading any checkpoint file safely.

``NAME.safetensors`` (weights) + ``NAME.json`` (``format``, ``format_version`` (readers refuse a
newer one with one line; a file without it is version 1), the ``config`` that rebuilds the
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

from preprocess.safe_io import replace, write_point, write_text

from .finite import first_nonfinite, tensor_digest
from .hub import resolve as _resolve_hub
from .keymap import CheckpointError

FORMAT = "s4d-checkpoint/1"
FORMAT_VERSION = 1  # the newest checkpoint format this s4d reads and the one it writes
# Harmless non-tensor objects that training scripts (VideoMAE-style) save beside the weights.
_SAFE_GLOBALS = [argparse.Namespace, *(g for g in (getattr(np, "dtype", None),) if g is not None)]


def sidecar(path: Path) -> Path:
    return path.with_suffix(".json")


def save_checkpoint(model: nn.Module, path: str | os.PathLike, extra: dict[str, Any] | None = None) -> Path:
    """Write ``path`` (.safetensors) and its ``.json`` config atomically; returns the path."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise CheckpointError(f"{path}: a checkpoint path must end in .safetensors")
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    # The digest lets a load tell a damaged or edited file from the one written here. The file's
    # own header carries it too: a kill between the two renames below pairs these weights with
    # the previous save's sidecar, which is a torn save (``finish_torn_save`` completes it), not damage.
    digest = tensor_digest(tensors)
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": model.config.to_dict(), **(extra or {}), "sha256": digest}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, tmp, metadata={"format": FORMAT, "format_version": str(FORMAT_VERSION), "sha256": digest})
    write_point(f"write {tmp}")
    tmp_json = _sidecar_tmp(path)
    write_text(tmp_json, json.dumps(meta, indent=2) + "\n")
    write_point(f"write {tmp_json}")
    replace(tmp, path)
    replace(tmp_json, sidecar(path))
    return path


def _sidecar_tmp(path: Path) -> Path:
    return sidecar(path).with_name(sidecar(path).name + ".tmp")


def finish_torn_save(path: str | os.PathLike) -> bool:
    """Complete a save killed between its two renames: ``path`` already holds the new weights and
    ``NAME.json.tmp`` their sidecar (its ``sha256`` is the one in the weights' header); rename it
    into place. Returns True if it did. A leftover ``.tmp`` of another save is left alone (the
    next save overwrites it)."""
    path = Path(path)
    tmp_json = _sidecar_tmp(path)
    if not path.is_file() or not tmp_json.is_file() or path.with_name(path.name + ".tmp").is_file():
        return False
    try:
        pending = json.loads(tmp_json.read_text())
    except (OSError, ValueError):  # written in part: not this save's
        return False
    if not isinstance(pending, dict) or pending.get("sha256") is None or pending.get("sha256") != _header_digest(path):
        return False
    replace(tmp_json, sidecar(path))
    return True


def resolve(path: str | os.PathLike) -> Path:
    """A local checkpoint path (an ``hf://`` file is fetched first); an ONNX export is refused
    here, with the command that runs it."""
    local = _resolve_hub(path)
    if local.suffix.lower() == ".onnx":
        raise CheckpointError(f"{local} is an ONNX export; use `s4d predict --onnx {local} ...` to run it (-c takes a .safetensors/.pt checkpoint)")
    return local


def format_version(meta: dict[str, Any], where: str | os.PathLike) -> int:
    """The format version a checkpoint's JSON (sidecar or header) declares: ``format_version``, else
    the number after ``s4d-checkpoint/`` in ``format``, else 1 (files written before versions).
    A newer version than this s4d reads, or one that is not a whole number, is one line naming ``where``."""
    raw = meta.get("format_version")
    if raw is None and isinstance(meta.get("format"), str) and meta["format"].startswith("s4d-checkpoint/"):
        raw = meta["format"].split("/", 1)[1]
    try:
        version = 1 if raw is None else int(raw)
    except (TypeError, ValueError):
        raise CheckpointError(f"{where}: format_version {raw!r} is not a whole number; use an intact copy") from None
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{where}: checkpoint format version {version} is newer than this s4d reads (up to {FORMAT_VERSION}); upgrade s4d")
    return version


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
    format_version(meta, meta_path)
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
        format_version(_header(path), path)
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
            except (json.JSONDecodeError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as err:
                raise CheckpointError(f"{meta_path}: not a valid S4D config sidecar ({_first_line(err)})") from None
            format_version(meta, meta_path)
        check_weights_finite(path, tensors)
        if recorded is not None:
            actual = tensor_digest(tensors)
            if actual != recorded and _header_digest(path) != actual:
                raise CheckpointError(
                    f"{path}: has been modified or damaged since it was saved: sha256 {actual[:16]}... != "
                    f"recorded {str(recorded)[:16]}... (in {meta_path.name}); use an intact copy"
                )
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


def _header(path: Path) -> dict[str, str]:
    """The string metadata of a safetensors header ({} for none, or for a file that is not one:
    reading it reports that)."""
    try:
        with safe_open(path, "pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError):
        return {}


def _header_digest(path: Path) -> str | None:
    """The sha256 a save wrote into the file's own header (None for older or foreign files)."""
    return _header(path).get("sha256")


def header_shapes(path: str | os.PathLike) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape from a safetensors header, without reading the tensors."""
    try:
        with safe_open(path, "pt") as f:
            return {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({_first_line(err)})") from None


def check_weights_finite(path: Path | str, obj: Any) -> None:
    bad = first_nonfinite(obj)
    if bad is not None:
        raise CheckpointError(f"{path}: tensor {bad} holds NaN or inf values: the weights are damaged (or the run diverged); use an intact copy")


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:200] if text else type(err).__name__
