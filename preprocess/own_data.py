"""Users' own data: a manifest made from a CSV of ``path,label[,split|fold]``.

Classes are the sorted label names (or the order given); partitions are the split or fold
values. A ``fold`` column means cross-validation (fold k tests on its partition and trains on
the others); a ``split`` column with ``train`` and ``test`` (optionally ``val``) means one run;
no column puts everything in ``train`` with no test set.
"""

from __future__ import annotations

from pathlib import Path

from .adapters.base import csv_rows, media_kind
from .manifest import Manifest, ManifestError, check_name, parse_manifest


def manifest_from_csv(
    csv_path: str | Path,
    name: str | None = None,
    *,
    classes: list[str] | None = None,
    align: bool = True,
    size: int = 160,
    frames: int = 16,
    stride: int = 4,
) -> Manifest:
    path = Path(csv_path).resolve()
    if not path.is_file():
        raise ManifestError(f"sample list missing: {path}")
    reader = csv_rows(path)
    rows = list(reader)
    cols = set(reader.fieldnames or [])
    if not {"path", "label"} <= cols:
        raise ManifestError(f"{path}: header must contain path,label (and optionally split or fold), got {sorted(cols)}")
    if not rows:
        raise ManifestError(f"{path}: no samples")
    for i, row in enumerate(rows, start=2):
        needed = ["path", "label"] + [c for c in ("fold", "split") if c in cols][:1]
        if any(not row.get(c) for c in needed):
            raise ManifestError(f"{path}:{i}: empty or missing field(s) in {dict(row)}")
    labels = sorted({r["label"] for r in rows})
    if classes:
        unknown = sorted(set(labels) - set(classes))
        if unknown:
            raise ManifestError(f"{path}: label(s) {unknown} not in --classes {classes}")
    part_col = "fold" if "fold" in cols else "split" if "split" in cols else None
    if part_col:  # a fold or split value names shard files and run folders: one plain name
        for i, row in enumerate(rows, start=2):
            check_name(row[part_col], part_col, f"{path}:{i}")
    partitions = sorted({r[part_col] for r in rows}) if part_col else ["train"]
    if part_col == "fold":
        folds = {p: {"train": [q for q in partitions if q != p], "test": [p]} for p in partitions}
    elif part_col == "split":
        if not {"train", "test"} & set(partitions):  # test rows alone: an evaluation set, for s4d eval
            raise ManifestError(f"{path}: the split column needs 'train' or 'test' values, got {partitions}")
        folds = {
            "main": {
                "train": [p for p in ("train",) if p in partitions],
                "test": [p for p in ("test",) if p in partitions],
                "val": [p for p in ("val",) if p in partitions],
            }
        }
        extra = sorted(set(partitions) - {"train", "test", "val"})
        if extra:
            raise ManifestError(f"{path}: split values must be train/test/val, got also {extra} (use a fold column for CV)")
    else:
        folds = {"main": {"train": ["train"], "test": []}}
    kinds = {media_kind(Path(r["path"]) if Path(r["path"]).is_absolute() else path.parent / r["path"]) for r in rows}
    if kinds == {"image"}:
        modality, codec, quality = "image", "jpeg", 95
    elif "image" not in kinds:
        modality, codec, quality = "video", "vp9", 31
    else:
        raise ManifestError(f"{path}: mixes images and videos; write one CSV per modality")
    raw = {
        "name": name or path.stem,
        "modality": modality,
        "description": f"Own data from {path}",
        "classes": classes or labels,
        "layout": {"adapter": "csv", "options": {"csv": path.name}},
        "preprocess": {"align": align, "size": size, "codec": codec, "quality": quality},
        "partitions": partitions,
        "folds": folds,
    }
    if modality == "video":
        raw["clip"] = {"frames": frames, "stride": stride}
    return parse_manifest(raw, path.with_suffix(".json"))
