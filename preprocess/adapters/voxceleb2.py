"""VoxCeleb2 dev: ``mp4/id*/<video>/<n>.mp4``, no labels (MAE pre-training)."""

from __future__ import annotations

from pathlib import Path

from ..manifest import Manifest, ManifestError
from .base import AdapterResult, RawSample, sanitise_key


def list_voxceleb2(root: Path, manifest: Manifest) -> AdapterResult:
    videos = root / manifest.layout.options.get("videos_dir", "mp4")
    if not videos.is_dir():
        raise ManifestError(f"voxceleb2: no video folder {videos}")
    partition = manifest.partitions[0]
    result = AdapterResult(layout="official", label_base="none", paths={"videos": videos.relative_to(root).as_posix()})
    for path in sorted(videos.glob("id*/*/*.mp4")):
        rel = path.relative_to(videos).with_suffix("").as_posix()
        result.add(RawSample(sanitise_key(rel), path, "video", -1, partition, rel))
    return result
