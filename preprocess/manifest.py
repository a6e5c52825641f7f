"""Dataset manifests: small, checked-in JSON files that say what a dataset is and how S4D uses it.

A manifest names the dataset, its modality and ordered classes (index = label), the raw layout
adapter with its options (where the official split files are inside the raw root), the
preprocessing recipe, the partitions its shards are grouped into and the folds built from
them, clip sampling, and for video datasets the still-image (SFER) source and its share.
Generated artefacts (shards, indexes) live under a data root (``./data`` or ``$S4D_DATA``),
never in ``manifests/``.

``load_manifest`` validates on load; every error names the file and the field.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .errors import InputError
from .typed_json import json_fields

MANIFESTS_DIR = Path(__file__).resolve().parents[1] / "manifests"
ADAPTERS = ("dfew", "ferv39k", "mafw", "affectnet", "voxceleb2", "csv")
GEOMETRIES = ("squash", "crop")


class ManifestError(InputError):
    """A manifest is malformed; the message names the file and the field."""


@dataclass(frozen=True)
class Layout:
    """How the raw release is laid out: the adapter and its options (paths inside the raw root)."""

    adapter: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Preprocess:
    align: bool = False  # run MTCNN and align by the eye line (MAFW, raw user videos)
    size: int = 160  # stored frame side in pixels
    margin: float = 0.25  # extra context around the face box (detected or listed), as a fraction of its size
    # How a frame or face box becomes the stored square. "squash": resize the whole frame (or the
    # face box, with its margin) to size x size, whatever its aspect (the reference's choice);
    # "crop": the largest centred square of the frame (or a square of the box's longer side).
    geometry: Literal["squash", "crop"] = "crop"
    codec: Literal["vp9", "mjpeg", "jpeg"] = "vp9"
    quality: int = 31  # VP9 crf (31: ~36 dB, BENCHMARKS.md), MJPEG quantiser, or JPEG quality
    # A clip is kept when it has face frames for one training window (clip.frames x clip.stride,
    # or its length if shorter), stored over the span where the face is; ``min_face_frames``
    # sets another count, ``min_face_fraction`` adds a share of all frames (0: off).
    min_face_frames: int | None = None
    min_face_fraction: float = 0.0
    shard_samples: int = 1000  # samples per shard (160 px VP9 clips of ~64 frames are ~45 KB: ~45 MB shards)
    frames_fps: float = 25.0  # frame rate recorded for releases that ship frame folders


@dataclass(frozen=True)
class Fold:
    train: tuple[str, ...]
    test: tuple[str, ...]
    val: tuple[str, ...] = ()


@dataclass(frozen=True)
class Clip:
    frames: int = 16
    stride: int = 4
    crop: tuple[int, int, int, int] | None = None  # (top, left, height, width) at load time


@dataclass(frozen=True)
class Sfer:
    manifest: str
    proportion: float = 0.5


@dataclass(frozen=True)
class Manifest:
    name: str
    modality: Literal["video", "image"]
    classes: tuple[str, ...]
    layout: Layout
    partitions: tuple[str, ...]
    folds: dict[str, Fold]
    preprocess: Preprocess = field(default_factory=Preprocess)
    clip: Clip | None = None
    sfer: Sfer | None = None
    expected: dict[str, int] = field(default_factory=dict)  # samples per partition in the release
    description: str = ""
    source: Path | None = None  # the file it was loaded from

    def class_index(self, name: str) -> int:
        try:
            return self.classes.index(name)
        except ValueError:
            raise ManifestError(f"{self.source or self.name}: unknown class {name!r} (classes: {list(self.classes)})") from None

    def fold_name(self, fold: str | None = None) -> str:
        """``fold``, checked, or the manifest's first fold when None."""
        name = fold or next(iter(self.folds))
        if name not in self.folds:
            raise ManifestError(f"{self.source or self.name}: no fold {name!r} (folds: {list(self.folds)})")
        return name

    def shard_dir(self, data_root: str | os.PathLike | None = None) -> Path:
        return resolve_data_root(data_root) / self.name

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("source")
        return d


def resolve_data_root(data_root: str | os.PathLike | None = None) -> Path:
    """``--data-root`` if given, else ``$S4D_DATA``, else ``./data``."""
    return Path(data_root or os.environ.get("S4D_DATA") or "data")


def locate_raw(name: str, env: dict[str, str] | None = None) -> Path:
    """The raw release of dataset ``name`` when no ``--raw`` is given: ``$S4D_RAW/<name>``, else
    ``./raw/<name>`` (either spelled as the manifest or in capitals); an error says where it
    looked and how to point it."""
    env = os.environ if env is None else env
    roots = ([Path(env["S4D_RAW"])] if env.get("S4D_RAW") else []) + [Path("raw")]
    tried = [root / n for root in roots for n in dict.fromkeys((name, name.upper()))]
    for path in tried:
        if path.is_dir():
            return path
    unset = "" if env.get("S4D_RAW") else " (S4D_RAW is not set)"
    raise ManifestError(
        f"{name}: no raw release found; looked in {', '.join(map(str, tried))}{unset}; "
        f"pass --raw DIR (make shards DATASET={name} RAW=DIR) or set S4D_RAW to the folder holding {name}/"
    )


def resolve_manifest_path(name: str | os.PathLike) -> Path:
    """A path that exists is used as is; a bare name (``mafw`` or ``mafw.json``) resolves in
    ``$S4D_MANIFESTS`` or the repository's ``manifests/``."""
    path = Path(name)
    if path.is_file():
        return path
    if path.parent == Path("."):
        base = Path(os.environ.get("S4D_MANIFESTS") or MANIFESTS_DIR)
        candidate = base / (path.name if path.suffix == ".json" else f"{path.name}.json")
        if candidate.is_file():
            return candidate
    available = sorted(p.stem for p in Path(os.environ.get("S4D_MANIFESTS") or MANIFESTS_DIR).glob("*.json"))
    raise ManifestError(f"manifest {str(name)!r} not found (bare names resolve in manifests/: {', '.join(available)})")


def read_json_file(path: Path) -> Any:
    """JSON from a file; any failure is a ``ManifestError`` naming the file."""
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as err:
        raise ManifestError(f"{path}: not valid JSON ({err})") from None
    except OSError as err:
        raise ManifestError(f"{path}: cannot read ({err.strerror})") from None


def read_manifest_json(name: str | os.PathLike) -> tuple[Any, Path]:
    path = resolve_manifest_path(name)
    return read_json_file(path), path


def load_manifest(name: str | os.PathLike) -> Manifest:
    raw, path = read_manifest_json(name)
    return parse_manifest(raw, path)


# A name that becomes part of a path (the dataset name, a partition, a fold, a shard) must stay
# one plain path component: no '/', no '..', not absolute, nothing hidden, at most 128 characters.
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def is_safe_name(value: object) -> bool:
    return isinstance(value, str) and SAFE_NAME.fullmatch(value) is not None and ".." not in value


def check_name(value: object, field_name: str, where: str | os.PathLike) -> str:
    """``value`` if it is a safe name (``SAFE_NAME``, no ``..``), else a ``ManifestError`` naming
    ``where`` (the file) and ``field_name``: the one rule for every name that becomes a path."""
    if not is_safe_name(value):
        raise ManifestError(
            f"{where}: {field_name}: must be a plain folder name (one path component: letters, digits, "
            f"'.', '_', '-'; at most 128; no '/' or '..'), got {value!r}"
        )
    return str(value)


def parse_manifest(raw: dict[str, Any], source: Path | None = None) -> Manifest:
    src = str(source or raw.get("name", "<manifest>"))
    if isinstance(raw, dict) and "sources" in raw:
        names = [s.get("manifest") for s in raw["sources"] if isinstance(s, dict)]
        raise ManifestError(f"{src}: is a pre-training mixture, not a dataset; use its sources ({', '.join(map(str, names))})")
    d = json_fields(Manifest, raw, "the manifest", src, ManifestError)

    def bad(field_name: str, why: str) -> ManifestError:
        return ManifestError(f"{src}: {field_name}: {why}")

    check_name(d["name"], "name", src)  # it names the shard folder under the data root

    if d["modality"] not in ("video", "image"):
        raise bad("modality", f"must be 'video' or 'image', got {d['modality']!r}")
    classes = tuple(d["classes"])
    if not classes or len(set(classes)) != len(classes) or not all(isinstance(c, str) and c for c in classes):
        raise bad("classes", 'must be a non-empty list of distinct names (empty for unlabelled data is ["none"])')

    layout = Layout(**json_fields(Layout, d["layout"], "layout", src, ManifestError))
    if layout.adapter not in ADAPTERS:
        raise bad("layout.adapter", f"unknown adapter {layout.adapter!r}; known: {', '.join(ADAPTERS)}")

    pre = Preprocess(**json_fields(Preprocess, d.get("preprocess", {}), "preprocess", src, ManifestError))
    if pre.codec not in ("vp9", "mjpeg", "jpeg"):
        raise bad("preprocess.codec", f"must be vp9, mjpeg or jpeg, got {pre.codec!r}")
    if (pre.codec == "jpeg") != (d["modality"] == "image"):
        raise bad("preprocess.codec", f"{pre.codec!r} does not fit modality {d['modality']!r} (images: jpeg; videos: vp9/mjpeg)")
    if pre.size <= 0 or pre.shard_samples <= 0 or pre.frames_fps <= 0:
        raise bad("preprocess", "size, shard_samples and frames_fps must be positive")
    if pre.geometry not in GEOMETRIES:
        raise bad("preprocess.geometry", f"must be squash or crop, got {pre.geometry!r}")
    if not isinstance(pre.margin, (int, float)) or not pre.margin > -1.0:
        raise bad("preprocess.margin", f"must be a number above -1 (a fraction of the face box), got {pre.margin!r}")
    if pre.min_face_frames is not None and pre.min_face_frames < 1:
        raise bad("preprocess.min_face_frames", f"must be a positive count, got {pre.min_face_frames}")
    if not 0.0 <= pre.min_face_fraction <= 1.0:
        raise bad("preprocess.min_face_fraction", f"must be in [0, 1], got {pre.min_face_fraction}")

    partitions = tuple(d["partitions"])
    if not partitions or len(set(partitions)) != len(partitions):
        raise bad("partitions", "must be a non-empty list of distinct names")
    for p in partitions:  # each names shard files (PARTITION-00000.tar) in the shard folder
        check_name(p, "partitions", src)
    folds = {}
    for fold_name, fold_raw in d["folds"].items():
        check_name(fold_name, "folds", src)  # a fold names its run folder (s4d cv: OUT/fold_<name>)
        f = json_fields(Fold, fold_raw, f"folds.{fold_name}", src, ManifestError)
        fold = Fold(**{k: tuple(v) for k, v in f.items()})
        for role in ("train", "test", "val"):
            unknown = sorted(set(getattr(fold, role)) - set(partitions))
            if unknown:
                raise bad(f"folds.{fold_name}.{role}", f"unknown partition(s) {unknown}; partitions: {list(partitions)}")
        for a, b in (("train", "test"), ("train", "val"), ("val", "test")):
            shared = sorted(set(getattr(fold, a)) & set(getattr(fold, b)))
            if shared:
                raise bad(f"folds.{fold_name}", f"{a} and {b} overlap in partition(s) {shared}")
        folds[str(fold_name)] = fold
    if not folds:
        raise bad("folds", "must define at least one fold (one train/test split)")
    if len(folds) > 1:  # cross-validation pools test predictions: every sample tested once
        seen: dict[str, str] = {}
        for fold_name, fold in folds.items():
            for p in fold.test:
                if p in seen:
                    raise bad(f"folds.{fold_name}.test", f"partition {p!r} is also the test set of fold {seen[p]!r} (overlapping folds)")
                seen[p] = fold_name

    clip = None
    if d.get("clip") is not None:
        c = json_fields(Clip, d["clip"], "clip", src, ManifestError)
        clip = Clip(frames=c.get("frames", 16), stride=c.get("stride", 4), crop=tuple(c["crop"]) if c.get("crop") else None)
        if clip.frames <= 0 or clip.stride <= 0:
            raise bad("clip", f"frames and stride must be positive, got {clip.frames}, {clip.stride}")
        if clip.crop is not None and (len(clip.crop) != 4 or any(v < 0 for v in clip.crop)):
            raise bad("clip.crop", "must be [top, left, height, width]")
    elif d["modality"] == "video":
        raise bad("clip", "video manifests need clip sampling (frames, stride)")

    sfer = None
    if d.get("sfer") is not None:
        sfer = Sfer(**json_fields(Sfer, d["sfer"], "sfer", src, ManifestError))
        if not 0.0 <= sfer.proportion:
            raise bad("sfer.proportion", f"must be >= 0, got {sfer.proportion}")
        if d["modality"] != "video":
            raise bad("sfer", "only a video (DFER) manifest has a still-image source")

    expected = dict(d.get("expected", {}))
    unknown = sorted(set(expected) - set(partitions))
    if unknown:
        raise bad("expected", f"counts for unknown partition(s) {unknown}")

    return Manifest(
        name=d["name"],
        modality=d["modality"],
        classes=classes,
        layout=layout,
        partitions=partitions,
        folds=folds,
        preprocess=pre,
        clip=clip,
        sfer=sfer,
        expected=expected,
        description=d.get("description", ""),
        source=source,
    )


def load_sfer(manifest: Manifest) -> Manifest | None:
    """The still-image manifest a DFER manifest names, validated (must be an image dataset)."""
    if manifest.sfer is None:
        return None
    base = manifest.source.parent if manifest.source else MANIFESTS_DIR
    path = base / manifest.sfer.manifest
    sfer = load_manifest(path if path.is_file() else manifest.sfer.manifest)
    if sfer.modality != "image":
        raise ManifestError(f"{manifest.source}: sfer.manifest {manifest.sfer.manifest!r} is a {sfer.modality} dataset, not images")
    return sfer
