"""MAFW: clips ``data/clips/<id>.mp4`` (or frames ``data/frames/<id>/``); folds from
``split/single/no_caption/set_{1..5}/{train,test}.txt`` (``<id>.mp4 <label word>``)."""

from __future__ import annotations

from pathlib import Path

from ..manifest import Manifest, ManifestError
from .base import AdapterResult, RawSample, check_partition_complement, label_of, read_lines, sanitise_key


def _read_split(path: Path) -> list[tuple[str, str]]:
    rows = []
    for i, line in enumerate(read_lines(path), start=1):
        parts = line.split()
        if len(parts) != 2:
            raise ManifestError(f"{path}:{i}: expected '<id>.mp4 <label>', got {line!r}")
        rows.append((Path(parts[0]).stem, parts[1].lower()))
    return rows


def list_mafw(root: Path, manifest: Manifest) -> AdapterResult:
    opts = manifest.layout.options
    clips = root / opts.get("clips_dir", "data/clips")
    frames = root / opts.get("frames_dir", "data/frames")
    split = root / opts.get("split_dir", "split/single/no_caption")
    result = AdapterResult()
    train_ids, test_ids = {}, {}
    for k, partition in enumerate(manifest.partitions, start=1):
        test = _read_split(split / f"set_{k}" / "test.txt")
        train_ids[partition] = {vid for vid, _ in _read_split(split / f"set_{k}" / "train.txt")}
        test_ids[partition] = {vid for vid, _ in test}
        for vid, word in test:
            label = label_of(manifest.classes, word, f"{split}/set_{k}/test.txt")
            clip = clips / f"{vid}.mp4"
            source, kind = (clip, "video") if clip.is_file() or not (frames / vid).is_dir() else (frames / vid, "frames")
            result.add(RawSample(sanitise_key(vid), source, kind, label, partition, vid))
    check_partition_complement(train_ids, test_ids, "mafw")
    return result
