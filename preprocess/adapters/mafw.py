"""MAFW: clips ``data/clips/<id>.mp4`` (or frames ``data/frames/<id>/``). Folds:

- official: ``split/single/no_caption/set_{1..5}/{train,test}.txt`` (``<id>.mp4 <label word>``);
- authors: ``anno/single/no_caption/set_{1..5}/{train,test}.csv`` (``video_name,labels``, 0..10
  in alphabetical class order), as the S4D scripts read them.

The first form found wins (``layout.options.form`` pins one); a numeric file's label base is
read from its values (``layout.options.label_base`` pins it)."""

from __future__ import annotations

from pathlib import Path

from ..manifest import Manifest, ManifestError
from .base import AdapterResult, RawSample, Row, clip_name, detect_label_base, named_label, numeric_label, sanitise_key
from .folds import collect_folds, locate_fold_splits, read_fold_tables

MAFW_ORDER = (
    "anger",
    "anxiety",
    "contempt",
    "disappointment",
    "disgust",
    "fear",
    "happiness",
    "helplessness",
    "neutral",
    "sadness",
    "surprise",
)  # the authors' numbering (alphabetical)
OFFICIAL = ("split/single/no_caption/set_{k}/{role}.txt",)
AUTHORS = ("anno/single/no_caption/set_{k}/{role}.csv",)


def list_mafw(root: Path, manifest: Manifest) -> AdapterResult:
    opts = manifest.layout.options
    form, template, folds = locate_fold_splits(root, "mafw", opts, OFFICIAL, AUTHORS, manifest.partitions)
    clips = root / opts.get("clips_dir", "data/clips")
    frames = root / opts.get("frames_dir", "data/frames")
    if not clips.is_dir() and not frames.is_dir():
        raise ManifestError(
            f"mafw: no clip or frame folder under {root}; searched {clips.relative_to(root)}, "
            f"{frames.relative_to(root)} (set layout.options.clips_dir / frames_dir in the manifest)"
        )
    result = AdapterResult(
        layout=form, paths={"splits": template, "clips": clips.relative_to(root).as_posix(), "frames": frames.relative_to(root).as_posix()}
    )
    tables = read_fold_tables(root, template, folds, result)
    numeric = form == "authors" or opts.get("label_base") not in (None, "auto", "names")
    if numeric:
        result.label_base = detect_label_base((r for rows in tables.values() for r in rows), len(MAFW_ORDER), opts.get("label_base"), "mafw", result)

    def read(row: Row) -> tuple[str, int] | None:
        if numeric:
            label = numeric_label(row, int(result.label_base), MAFW_ORDER, manifest.classes, result)
        else:
            label = named_label(row, manifest.classes, result)
        return None if label is None else (clip_name(row.id), label)

    def sample(vid: str, label: int, partition: str) -> RawSample:
        clip = clips / f"{vid}.mp4"
        source, kind = (clip, "video") if clip.is_file() or not (frames / vid).is_dir() else (frames / vid, "frames")
        return RawSample(sanitise_key(vid), source, kind, label, partition, vid)

    collect_folds(folds, tables, "mafw", result, read, sample)
    return result
