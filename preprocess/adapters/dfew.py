"""DFEW, as its owners ship it or as the S4D authors' code reads it.

Frames: ``Clip/clip_224x224/<5-digit id>/`` (MAE-DFER renames it ``Clip/jpg_256``, the S4D
scripts ``clip_jpg_256``; the 16-frame ``Clip/clip_224x224_16f`` also ships). Folds:

- official: ``EmoLabel_DataSplit/{train,test}(single-labeled)/set_{1..5}.csv``, header
  ``video_name,label``, labels 1..7 = happy, sad, neutral, angry, surprise, disgust, fear;
- authors: ``train_set_k.csv`` / ``test_set_k.csv``, the same classes numbered 0..6, beside the
  official files (where the S4D scripts read them), in ``EmoLabel_DataSplit/`` or at the root.

The first form found wins (``layout.options.form`` pins one); the label base is read from the
values (``layout.options.label_base`` pins it)."""

from __future__ import annotations

from pathlib import Path

from ..manifest import Manifest
from .base import AdapterResult, RawSample, Row, clip_name, detect_label_base, locate_dir, numeric_label, option_list
from .folds import collect_folds, locate_fold_splits, read_fold_tables

DFEW_ORDER = ("happy", "sad", "neutral", "angry", "surprise", "disgust", "fear")  # the files' label order (1..7 / 0..6)
FRAMES = ("Clip/clip_224x224", "Clip/jpg_256", "clip_jpg_256", "Clip/clip_224x224_16f")
OFFICIAL = ("EmoLabel_DataSplit/{role}(single-labeled)/set_{k}.csv",)
AUTHORS = (
    "EmoLabel_DataSplit/{role}(single-labeled)/{role}_set_{k}.csv",
    "EmoLabel_DataSplit/{role}_set_{k}.csv",
    "{role}_set_{k}.csv",
)


def _clip_id(row: Row, result: AdapterResult) -> str | None:
    name = clip_name(row.id)
    if not name.isdigit():
        result.bad_row(row.where, f"clip id {row.id!r} is not a number")
        return None
    return name.zfill(5)


def list_dfew(root: Path, manifest: Manifest) -> AdapterResult:
    opts = manifest.layout.options
    form, template, folds = locate_fold_splits(root, "dfew", opts, OFFICIAL, AUTHORS, manifest.partitions)
    frames = locate_dir(root, option_list(opts, "frames_dir", FRAMES, "dfew"), "dfew", "frame")
    result = AdapterResult(layout=form, paths={"splits": template, "frames": frames.relative_to(root).as_posix()})
    tables = read_fold_tables(root, template, folds, result)
    base = detect_label_base((r for rows in tables.values() for r in rows), len(DFEW_ORDER), opts.get("label_base"), "dfew", result)
    result.label_base = base

    def read(row: Row) -> tuple[str, int] | None:
        vid, label = _clip_id(row, result), numeric_label(row, base, DFEW_ORDER, manifest.classes, result)
        return None if vid is None or label is None else (vid, label)

    def sample(vid: str, label: int, partition: str) -> RawSample:
        return RawSample(vid, frames / vid, "frames", label, partition, vid)

    collect_folds(folds, tables, "dfew", result, read, sample)
    return result
