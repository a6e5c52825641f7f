"""FERV39K: ``2_ClipsforFaceCrop/<Scene>/<Emotion>/<id>/`` frame folders; splits from
``4_setups/All_scenes/{train_All,test_All}.csv`` (space-separated, no header:
``<Scene>/<Emotion>/<id> <Emotion>``)."""

from __future__ import annotations

from pathlib import Path

from ..manifest import Manifest, ManifestError
from .base import AdapterResult, RawSample, label_of, read_lines, sanitise_key


def list_ferv39k(root: Path, manifest: Manifest) -> AdapterResult:
    opts = manifest.layout.options
    frames = root / opts.get("frames_dir", "2_ClipsforFaceCrop")
    split = root / opts.get("split_dir", "4_setups/All_scenes")
    result = AdapterResult()
    for partition, filename in (("train", "train_All.csv"), ("test", "test_All.csv")):
        path = split / filename
        for i, line in enumerate(read_lines(path), start=1):
            parts = line.split()
            if len(parts) != 2:
                raise ManifestError(f"{path}:{i}: expected '<Scene>/<Emotion>/<id> <Emotion>', got {line!r}")
            rel, emotion = parts
            label = label_of(manifest.classes, emotion.lower(), f"{path}:{i}")
            result.add(RawSample(sanitise_key(rel), frames / rel, "frames", label, partition, rel))
    return result
