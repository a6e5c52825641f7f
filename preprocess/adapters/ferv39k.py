"""FERV39K: ``2_ClipsforFaceCrop/<Scene>/<Emotion>/<id>/`` frame folders. Splits:

- official: ``4_setups/All_scenes/{train,test}_All.csv`` (space-separated, no header:
  ``<Scene>/<Emotion>/<id> <Emotion>``);
- authors: ``Annotation/{train,test}.csv`` (``path,id``, ids in alphabetical class order), as the
  S4D scripts read them.

The first form found wins (``layout.options.form`` pins one); a numeric file's label base is
read from its values (``layout.options.label_base`` pins it)."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from ..manifest import Manifest
from .base import (
    AdapterResult,
    RawSample,
    detect_label_base,
    locate_dir,
    locate_splits,
    named_label,
    numeric_label,
    option_list,
    read_rows,
    sanitise_key,
)

FERV_ORDER = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")  # the authors' ids (alphabetical)
OFFICIAL = ("4_setups/All_scenes/{role}_All.csv",)
AUTHORS = ("Annotation/{role}.csv",)


def _relative(value: str, frames_name: str) -> str:
    """``<Scene>/<Emotion>/<id>``: a path written from a parent of the frame folder loses that part."""
    parts = PurePosixPath(value.replace("\\", "/").strip("/")).parts
    if frames_name in parts:
        parts = parts[len(parts) - parts[::-1].index(frames_name) :]
    return "/".join(parts)


def list_ferv39k(root: Path, manifest: Manifest) -> AdapterResult:
    opts = manifest.layout.options
    forms = {
        "official": option_list(opts, "official_splits", OFFICIAL, "ferv39k"),
        "authors": option_list(opts, "authors_splits", AUTHORS, "ferv39k"),
    }
    roles = [p for p in ("train", "test") if p in manifest.partitions]
    form, template = locate_splits(root, "ferv39k", forms, opts.get("form"), [{"role": r} for r in roles])
    frames = locate_dir(root, option_list(opts, "frames_dir", ("2_ClipsforFaceCrop",), "ferv39k"), "ferv39k", "frame")
    result = AdapterResult(layout=form, paths={"splits": template, "frames": frames.relative_to(root).as_posix()})
    tables = {role: read_rows(root / template.format(role=role), result) for role in roles}
    numeric = form == "authors" or opts.get("label_base") not in (None, "auto", "names")
    if numeric:
        result.label_base = detect_label_base(
            (r for rows in tables.values() for r in rows), len(FERV_ORDER), opts.get("label_base"), "ferv39k", result
        )
    for partition, rows in tables.items():
        for row in rows:
            label = (
                numeric_label(row, int(result.label_base), FERV_ORDER, manifest.classes, result)
                if numeric
                else named_label(row, manifest.classes, result)
            )
            if label is None:
                continue
            rel = _relative(row.id, frames.name)
            result.add(RawSample(sanitise_key(rel), frames / rel, "frames", label, partition, rel))
    return result
