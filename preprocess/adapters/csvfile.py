"""Users' own data: a CSV with header ``path,label`` and optionally ``split`` or ``fold``.
``path`` is a video, a folder of frames or an image, relative to the CSV's folder unless
absolute; ``label`` is a class name of the manifest; the split/fold value is the partition
(default: the manifest's first partition)."""

from __future__ import annotations

from pathlib import Path

from ..manifest import Manifest, ManifestError
from .base import AdapterResult, RawSample, csv_rows, media_kind, sanitise_key


def list_csv(root: Path, manifest: Manifest) -> AdapterResult:
    path = root / manifest.layout.options.get("csv", "samples.csv")
    if not path.is_file():
        raise ManifestError(f"sample list missing: {path}")
    result = AdapterResult(layout="csv", paths={"list": path.name})
    reader = csv_rows(path)
    cols = set(reader.fieldnames or [])
    if not {"path", "label"} <= cols:
        raise ManifestError(f"{path}: header must contain path,label (and optionally split or fold), got {reader.fieldnames}")
    part_col = "split" if "split" in cols else "fold" if "fold" in cols else None
    for i, row in enumerate(reader, start=2):
        if not row.get("path") or not row.get("label") or (part_col and not row.get(part_col)):
            result.bad_row(f"{path}:{i}", f"empty or missing field(s) in {dict(row)}")
            continue
        src = Path(row["path"])
        src = src if src.is_absolute() else path.parent / src
        partition = row[part_col] if part_col else manifest.partitions[0]
        if partition not in manifest.partitions:
            result.bad_row(f"{path}:{i}", f"{part_col} {partition!r} is not a partition of {list(manifest.partitions)}")
            continue
        if row["label"] not in manifest.classes:
            result.bad_row(f"{path}:{i}", f"label {row['label']!r} is not a class of the manifest {list(manifest.classes)}")
            continue
        label = manifest.classes.index(row["label"])
        original = Path(row["path"]).with_suffix("").as_posix()
        result.add(RawSample(sanitise_key(original), src, media_kind(src), label, partition, row["path"]))
    return result
