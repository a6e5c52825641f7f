"""What an ONNX export declares, checked before anything is sized by it: the file read with
``onnx`` without external data (an export is one self-contained file), the ``s4d`` metadata's
fields and sizes within the limits below, the graph's ``pixels``/``probs`` shapes agreeing with
it, every floating initializer finite and their digest as recorded. ``check_input_record``
also bounds a checkpoint's JSON ``input`` record (``heads.TorchHeads``)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from preprocess.errors import InputError

FORMAT = "s4d-onnx/1"
META_KEY = "s4d"

# What an export's metadata may declare. s4d's models take 160 or 224 px and 16 frames (debug
# and demo sizes: 64 px, 4-8 frames); these bounds are twice the largest, so no flag raises
# them: a file past them was not written by s4d export, and sizing buffers by it could take GBs.
MAX_SIZE = 448
MAX_FRAMES = 32
MAX_CLASSES = 1000
MAX_NAME_CHARS = 200
MAX_STORED_SIZE = 1024  # the training frames' stored side (preprocess.size, 160-256 in practice)
MAX_STRIDE = 64
MAX_META_CHARS = 1 << 20
_TASK_RANK = {"video": 5, "image": 4}


def initializer_digest(model) -> str:
    """sha256 over every initializer's name, type, shape and values, in name order."""
    import hashlib

    from onnx import numpy_helper

    h = hashlib.sha256()
    for init in sorted(model.graph.initializer, key=lambda i: i.name):
        h.update(f"{init.name}\0{init.data_type}\0{tuple(init.dims)}\0".encode())
        h.update(init.raw_data if init.raw_data else np.ascontiguousarray(numpy_helper.to_array(init)).tobytes())
    return h.hexdigest()


def load_model_proto(path: Path):
    """The ModelProto of ``path`` without its external data; a file that is not ONNX, or one
    that keeps initializers in other files (an export is one self-contained file), is refused."""
    try:
        import onnx
    except ImportError:
        raise InputError("--onnx needs onnx to check the model's weights: pip install 's4d[onnx]'") from None
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # protobuf's decode errors
        raise InputError(f"{path}: not a readable ONNX model ({_first_line(err)})") from None
    external = next((i.name for i in model.graph.initializer if i.data_location == onnx.TensorProto.EXTERNAL), None)
    if external is not None:
        raise InputError(
            f"{path}: initializer {external} is stored in another file (external data); s4d export writes one self-contained .onnx: export it again"
        )
    return model


def check_initializers(path: Path, recorded: str | None, model=None) -> None:
    """Every floating initializer finite (the first that is not is named) and, where the export
    recorded one, the initializers' digest unchanged. External data is refused, never followed
    (``load_model_proto``)."""
    from onnx import numpy_helper

    model = load_model_proto(path) if model is None else model
    for init in model.graph.initializer:
        values = numpy_helper.to_array(init)
        if values.dtype.kind in "fc" and values.size and not np.isfinite(values).all():
            raise InputError(f"{path}: initializer {init.name} holds NaN or inf values: the model file is damaged; export it again (s4d export)")
    if recorded is not None:
        actual = initializer_digest(model)
        if actual != recorded:
            raise InputError(
                f"{path}: has been modified or damaged since s4d export wrote it: sha256 {actual[:16]}... != "
                f"recorded {str(recorded)[:16]}...; export it again (s4d export)"
            )


def read_metadata(path: Path, model) -> dict[str, Any]:
    """The export's ``s4d`` metadata, checked: ``task`` video|image, 1..MAX_CLASSES class names,
    ``frames`` and ``size`` within MAX_FRAMES / MAX_SIZE, the ``input`` record's sizes within
    bounds, and the graph's ``pixels`` input (B, 3, T, H, W) / (B, 3, H, W) agreeing with them."""
    raw = next((p.value for p in model.metadata_props if p.key == META_KEY), None)
    if raw is None:
        raise InputError(f"{path}: not exported by s4d export (no {META_KEY!r} metadata); export it with s4d export")
    if len(raw) > MAX_META_CHARS:
        raise InputError(
            f"{path}: its {META_KEY!r} metadata is {len(raw)} characters (limit {MAX_META_CHARS}); not written by s4d export: export it again"
        )
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: its {META_KEY!r} metadata is not valid JSON ({_first_line(err)}); export it again") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise InputError(f"{path}: not exported by s4d export (metadata format is not {FORMAT}); export it with s4d export")
    _check_fields(path, meta)
    check_input_record(path, meta.get("input"))
    _check_graph_input(path, model, meta)
    return meta


ONNX_FIX = "the file is damaged or not written by s4d export: export it again"


def _bad(path: Path, field: str, value: Any, rule: str, fix: str = ONNX_FIX) -> InputError:
    """One line naming the file, the metadata field, its value (shortened), the rule and the fix."""
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return InputError(f"{path}: metadata {field} is {shown}, {rule}; {fix}")


def _int_in(path: Path, meta: dict[str, Any], field: str, high: int, where: str = "", fix: str = ONNX_FIX) -> int:
    """``meta[field]``, a whole number in 1..high (the limit is named, and why no flag raises it)."""
    value = meta.get(field)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
        raise _bad(
            path,
            where + field,
            value,
            f"must be a whole number from 1 to {high} (the limit: s4d models take 160 or 224 px and 16 frames, so no flag raises it)",
            fix,
        )
    return value


def _check_fields(path: Path, meta: dict[str, Any]) -> None:
    if meta.get("task") not in _TASK_RANK:
        raise _bad(path, "task", meta.get("task"), "must be video or image")
    _int_in(path, meta, "frames", MAX_FRAMES)
    _int_in(path, meta, "size", MAX_SIZE)
    classes = meta.get("classes")
    if not isinstance(classes, list) or not 1 <= len(classes) <= MAX_CLASSES:
        raise _bad(
            path, "classes", classes if not isinstance(classes, list) else f"{len(classes)} names", f"must be a list of 1 to {MAX_CLASSES} names"
        )
    if not all(isinstance(c, str) and 0 < len(c) <= MAX_NAME_CHARS for c in classes):
        raise _bad(path, "classes", classes, f"must be names of 1 to {MAX_NAME_CHARS} characters")
    if meta.get("sha256") is not None and not isinstance(meta["sha256"], str):
        raise _bad(path, "sha256", meta["sha256"], "must be a hex digest")


def check_input_record(path: Path, record: Any, fix: str = ONNX_FIX) -> None:
    """The training ``input`` record: ``stored_size`` and ``stride`` bounded, ``crop`` inside the
    stored frame, ``fps`` and ``margin`` finite (predict sizes its aligned frames by them). Also
    checked in a checkpoint's JSON config (``TorchHeads``), with that file's ``fix``."""
    if record is None:
        return
    if not isinstance(record, dict):
        raise _bad(path, "input", record, "must be an object", fix)
    if record.get("stored_size") is not None:
        _int_in(path, record, "stored_size", MAX_STORED_SIZE, "input.", fix)
    if record.get("stride") is not None:
        _int_in(path, record, "stride", MAX_STRIDE, "input.", fix)
    for field in ("fps", "margin"):
        value = record.get(field)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not 0 <= value <= 1000
        ):
            raise _bad(path, f"input.{field}", value, "must be a finite number from 0 to 1000", fix)
    crop = record.get("crop")
    if crop is not None:
        side = record.get("stored_size") or MAX_STORED_SIZE
        ok = (
            isinstance(crop, list)
            and len(crop) == 4
            and all(isinstance(v, int) and not isinstance(v, bool) for v in crop)
            and crop[0] >= 0
            and crop[1] >= 0
            and crop[2] >= 1
            and crop[3] >= 1
            and crop[0] + crop[2] <= side
            and crop[1] + crop[3] <= side
        )
        if not ok:
            raise _bad(path, "input.crop", crop, f"must be [top, left, height, width] inside the {side} px stored frame", fix)


def _check_graph_input(path: Path, model, meta: dict[str, Any]) -> None:
    """The graph's ``pixels`` input has the rank of the metadata's task and, where its dims are
    fixed, the metadata's channels, frames and size (the batch dim may be anything)."""
    inputs = {i.name: i for i in model.graph.input}
    if "pixels" not in inputs or "probs" not in {o.name for o in model.graph.output}:
        raise InputError(f"{path}: the graph has no 'pixels' input or no 'probs' output: not an s4d export; export it with s4d export")
    dims = inputs["pixels"].type.tensor_type.shape.dim
    task = meta["task"]
    want = (3, meta["frames"], meta["size"], meta["size"]) if task == "video" else (3, meta["size"], meta["size"])
    got = tuple(d.dim_value if d.HasField("dim_value") else None for d in dims)
    if len(got) != _TASK_RANK[task] or any(g is not None and g != w for g, w in zip(got[1:], want)):
        shown = ", ".join("?" if g is None else str(g) for g in got)
        raise InputError(
            f"{path}: the graph takes pixels ({shown}) but its metadata says a {task} model of "
            f"(B, {', '.join(map(str, want))}): the file is damaged or edited; export it again"
        )
    out = next(o for o in model.graph.output if o.name == "probs").type.tensor_type.shape.dim
    classes = out[-1].dim_value if len(out) == 2 and out[-1].HasField("dim_value") else None
    if len(out) != 2 or classes not in (None, len(meta["classes"])):
        raise InputError(
            f"{path}: the graph's probs output is not (B, {len(meta['classes'])}) for the "
            f"{len(meta['classes'])} class names in its metadata: the file is damaged or edited; export it again"
        )


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:160] if text else type(err).__name__
