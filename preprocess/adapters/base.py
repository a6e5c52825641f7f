"""Types shared by the layout adapters."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..manifest import ManifestError

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


@dataclass(frozen=True)
class RawSample:
    key: str  # sanitised WebDataset key, unique within the dataset
    source: Path  # a video file, a folder of frames, or an image
    kind: Literal["video", "frames", "image"]
    label: int  # index into manifest.classes; -1 when unlabelled
    partition: str
    original_id: str  # the id as the release writes it
    face_box: tuple[float, float, float, float] | None = None  # x, y, w, h (AffectNet lists)


@dataclass(frozen=True)
class Problem:
    original_id: str
    reason: str


@dataclass
class AdapterResult:
    samples: list[RawSample] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    excluded: Counter = field(default_factory=Counter)  # reason -> count, left out on purpose

    def add(self, sample: RawSample) -> None:
        """Keep the sample if its media exists, else record why not."""
        ok = sample.source.is_dir() and any(sample.source.iterdir()) if sample.kind == "frames" else sample.source.is_file()
        if ok:
            self.samples.append(sample)
        else:
            what = "frame folder missing or empty" if sample.kind == "frames" else f"{sample.kind} file missing"
            self.problems.append(Problem(sample.original_id, f"{what}: {sample.source}"))


_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def sanitise_key(original: str) -> str:
    """WebDataset splits keys at the first dot and treats slashes as paths: keep [A-Za-z0-9_-]."""
    key = _UNSAFE.sub("_", original).strip("_")
    if not key:
        raise ValueError(f"sample id {original!r} has no usable characters for a key")
    return key


def read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise ManifestError(f"official split file missing: {path}")
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]


def label_of(manifest_classes: tuple[str, ...], name: str, where: str) -> int:
    try:
        return manifest_classes.index(name)
    except ValueError:
        raise ManifestError(f"{where}: label {name!r} is not a class of the manifest {list(manifest_classes)}") from None


def media_kind(path: Path) -> Literal["video", "frames", "image"]:
    if path.is_dir():
        return "frames"
    return "image" if path.suffix.lower() in IMAGE_EXTS else "video"


def check_partition_complement(
    train_ids: dict[str, set[str]], test_ids: dict[str, set[str]], dataset: str
) -> None:
    """Official k-fold releases list train and test per fold; ours stores each test set once and
    builds train from the others. Refuse a release where that would change the train sets."""
    for fold, train in train_ids.items():
        others = set().union(*(ids for f, ids in test_ids.items() if f != fold))
        if train != others:
            extra, lacking = sorted(train - others)[:3], sorted(others - train)[:3]
            raise ManifestError(
                f"{dataset} fold {fold}: official train list differs from the other folds' test lists "
                f"(only in train: {extra}; only in other tests: {lacking})"
            )
    seen: Counter = Counter(i for ids in test_ids.values() for i in ids)
    twice = sorted(i for i, n in seen.items() if n > 1)
    if twice:
        raise ManifestError(f"{dataset}: sample(s) in more than one official test set: {twice[:5]}")
