"""DFEW: ``Clip/jpg_256/<5-digit id>/`` frame folders; folds from
``EmoLabel_DataSplit/{train,test}(single-labeled)/set_{1..5}.csv`` (``video_name,label``,
labels 1..7 = happy, sad, neutral, angry, surprise, disgust, fear)."""

from __future__ import annotations

import csv
from pathlib import Path

from ..manifest import Manifest, ManifestError
from .base import AdapterResult, RawSample, check_partition_complement, label_of

DFEW_LABELS = {1: "happy", 2: "sad", 3: "neutral", 4: "angry", 5: "surprise", 6: "disgust", 7: "fear"}


def _read_split(path: Path) -> list[tuple[str, int]]:
    if not path.is_file():
        raise ManifestError(f"official split file missing: {path}")
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or not {"video_name", "label"} <= set(reader.fieldnames):
            raise ManifestError(f"{path}: expected header video_name,label, got {reader.fieldnames}")
        rows = []
        for i, row in enumerate(reader, start=2):
            try:
                rows.append((str(int(row["video_name"])).zfill(5), int(row["label"])))
            except (TypeError, ValueError):
                raise ManifestError(f"{path}:{i}: bad row {row}") from None
    return rows


def list_dfew(root: Path, manifest: Manifest) -> AdapterResult:
    opts = manifest.layout.options
    frames = root / opts.get("frames_dir", "Clip/jpg_256")
    split = root / opts.get("split_dir", "EmoLabel_DataSplit")
    result = AdapterResult()
    train_ids, test_ids = {}, {}
    for k, partition in enumerate(manifest.partitions, start=1):
        test = _read_split(split / "test(single-labeled)" / f"set_{k}.csv")
        train_ids[partition] = {vid for vid, _ in _read_split(split / "train(single-labeled)" / f"set_{k}.csv")}
        test_ids[partition] = {vid for vid, _ in test}
        for vid, label in test:
            if label not in DFEW_LABELS:
                raise ManifestError(f"{split}/test(single-labeled)/set_{k}.csv: label {label} of {vid} is not 1..7")
            name = DFEW_LABELS[label]
            result.add(RawSample(vid, frames / vid, "frames", label_of(manifest.classes, name, "dfew"), partition, vid))
    check_partition_complement(train_ids, test_ids, "dfew")
    return result
