"""Types and helpers shared by the layout adapters."""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal

from ..errors import InputError
from ..manifest import ManifestError

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
VIDEO_EXTS = {".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv"}
LabelBase = int | Literal["names", "none"]  # 0 or 1 for numeric label files


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
    problems: list[Problem] = field(default_factory=list)  # listed samples whose media is missing
    excluded: Counter = field(default_factory=Counter)  # reason -> count, left out on purpose
    release_problems: list[Problem] = field(default_factory=list)  # unreadable rows, inconsistent folds
    layout: str = "official"  # which form of the release was read: "official", "authors", "csv"
    label_base: LabelBase = "names"  # how labels are written: class names, 0- or 1-based numbers
    paths: dict[str, str] = field(default_factory=dict)  # what was read, relative to the raw root

    def add(self, sample: RawSample) -> None:
        """Keep the sample if its media exists, else record why not."""
        ok = sample.source.is_dir() and any(sample.source.iterdir()) if sample.kind == "frames" else sample.source.is_file()
        if ok:
            self.samples.append(sample)
        else:
            what = "frame folder missing or empty" if sample.kind == "frames" else f"{sample.kind} file missing"
            self.problems.append(Problem(sample.original_id, f"{what}: {sample.source}"))

    def bad_row(self, where: str, why: str) -> None:
        """A row of an official file that cannot be used: a real run refuses the release, the dry
        run lists every such row."""
        self.release_problems.append(Problem(where, f"{where}: {why}"))


_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def sanitise_key(original: str) -> str:
    """WebDataset splits keys at the first dot and treats slashes as paths: keep [A-Za-z0-9_-]."""
    key = _UNSAFE.sub("_", original).strip("_")
    if not key:
        raise InputError(f"sample id {original!r} has no usable characters for a key")
    return key


def read_text(path: Path) -> str:
    """A text file as UTF-8, with or without a byte-order mark; other encodings are one error
    naming the file and line (Latin-1 and Windows code pages are not guessed)."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise ManifestError(
            f"{path}: line {line}: not UTF-8 text (byte 0x{data[err.start]:02x}); save it as UTF-8 (e.g. iconv -f latin1 -t utf-8)"
        ) from None


def csv_rows(path: Path) -> csv.DictReader:
    """A CSV file with a header, read as UTF-8 (see ``read_text``)."""
    return csv.DictReader(io.StringIO(read_text(path), newline=""))


def read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise ManifestError(f"official split file missing: {path}")
    return [ln.strip() for ln in read_text(path).splitlines() if ln.strip()]


def label_of(manifest_classes: tuple[str, ...], name: str, where: str) -> int:
    try:
        return manifest_classes.index(name)
    except ValueError:
        raise ManifestError(f"{where}: label {name!r} is not a class of the manifest {list(manifest_classes)}") from None


def media_kind(path: Path) -> Literal["video", "frames", "image"]:
    if path.is_dir():
        return "frames"
    return "image" if path.suffix.lower() in IMAGE_EXTS else "video"


# ----------------------------------------------------------------------------- finding a form


def option_list(opts: dict[str, Any], key: str, default: Iterable[str], dataset: str) -> tuple[str, ...]:
    """A layout option that names one path or a list of candidate paths."""
    value = opts.get(key, tuple(default))
    values = (value,) if isinstance(value, str) else tuple(value) if isinstance(value, (list, tuple)) else None
    if not values or not all(isinstance(v, str) and v for v in values):
        raise ManifestError(f"{dataset}: layout.options.{key} must be a path or a list of paths inside the raw root, got {value!r}")
    return values


def _shown(template: str) -> str:
    return template.replace("{role}", "{train,test}").replace("{k}", "{1..5}")


def locate_splits(root: Path, dataset: str, forms: dict[str, tuple[str, ...]], pinned: Any, files: list[dict[str, Any]]) -> tuple[str, str]:
    """The first form and path template (``{role}``, ``{k}`` placeholders) under which every split
    file exists. ``pinned`` (layout.options.form) restricts the search to one form. When none
    is complete, one error lists every place searched."""
    if pinned not in (None, "auto", *forms):
        raise ManifestError(f"{dataset}: layout.options.form must be auto or one of {', '.join(forms)}, got {pinned!r}")
    searched = []
    for form, templates in forms.items():
        if pinned not in (None, "auto") and form != pinned:
            continue
        for template in templates:
            paths = [root / template.format(**f) for f in files]
            missing = [p for p in paths if not p.is_file()]
            if not missing:
                return form, template
            partial = f" (incomplete: {missing[0].relative_to(root)} missing)" if len(missing) < len(paths) else ""
            searched.append(f"{form}: {_shown(template)}{partial}")
    raise ManifestError(
        f"{dataset}: no split files found under {root}; searched {'; '.join(searched)} "
        "(pin the form or the paths with layout.options in the manifest)"
    )


def locate_dir(root: Path, candidates: tuple[str, ...], dataset: str, what: str) -> Path:
    """The first candidate folder that exists; else one error listing them all."""
    for rel in candidates:
        if (root / rel).is_dir():
            return root / rel
    raise ManifestError(
        f"{dataset}: no {what} folder under {root}; searched {', '.join(candidates)} (set layout.options in the manifest if yours lives elsewhere)"
    )


# ----------------------------------------------------------------------------- reading split files

ID_COLUMNS = ("video_name", "path", "name", "video", "clip")
LABEL_COLUMNS = ("label", "labels", "id", "emotion", "expression")


@dataclass(frozen=True)
class Row:
    where: str  # "file:line"
    id: str
    label: str


def read_rows(path: Path, result: AdapterResult) -> list[Row]:
    """(id, label) rows of a two-column split file, comma- or whitespace-separated, with or
    without a header (``video_name,label``, ``path,id``, ...). Rows that cannot be read go to
    ``result.release_problems``."""
    lines = read_text(path).splitlines()
    comma = any("," in ln for ln in lines[:5])
    rows: list[Row] = []
    columns = (0, 1)
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        cells = [c.strip() for c in next(csv.reader([line]))] if comma else line.strip().rsplit(None, 1)
        if i == 1 and _is_header(cells):
            names = [c.lower() for c in cells]
            columns = (_column(names, ID_COLUMNS, 0), _column(names, LABEL_COLUMNS, 1))
            continue
        if len(cells) <= max(columns) or not cells[columns[0]] or not cells[columns[1]]:
            result.bad_row(f"{path}:{i}", f"expected '<id>{',' if comma else ' '}<label>', got {line.strip()!r}")
            continue
        rows.append(Row(f"{path}:{i}", cells[columns[0]], cells[columns[1]]))
    return rows


def _is_header(cells: list[str]) -> bool:
    names = [c.lower() for c in cells]
    return any(n in ID_COLUMNS for n in names[:1]) or any(n in LABEL_COLUMNS for n in names[1:])


def _column(names: list[str], wanted: tuple[str, ...], fallback: int) -> int:
    return next((names.index(w) for w in wanted if w in names), fallback)


def clip_name(value: str) -> str:
    """The clip id in a row: the last path part, without a video extension."""
    name = value.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    stem, dot, ext = name.rpartition(".")
    return stem if dot and f".{ext.lower()}" in VIDEO_EXTS else name


def detect_label_base(rows: Iterable[Row], n_classes: int, pinned: Any, dataset: str, result: AdapterResult) -> int:
    """0- or 1-based numeric labels, from the values: a 0 means 0-based, ``n_classes`` means
    1-based; neither (or both) is refused, naming the option that settles it. Non-numeric
    labels become bad rows."""
    values = set()
    for r in rows:
        try:
            values.add(int(r.label))
        except ValueError:
            result.bad_row(r.where, f"label {r.label!r} is not a number")
    if pinned not in (None, "auto"):
        if pinned not in (0, 1):
            raise ManifestError(f"{dataset}: layout.options.label_base must be auto, 0 or 1, got {pinned!r}")
        return int(pinned)
    span = f"{min(values)}..{max(values)}" if values else "none"
    if 0 in values and n_classes in values:
        raise ManifestError(
            f"{dataset}: labels span {span}, more values than the {n_classes} classes; "
            "check the split files or set layout.options.label_base to 0 or 1"
        )
    if 0 in values or n_classes in values:
        return 0 if 0 in values else 1
    raise ManifestError(
        f"{dataset}: numeric labels {span} could be 0-based or 1-based for {n_classes} classes; "
        "set layout.options.label_base to 0 or 1 in the manifest"
    )


def numeric_label(row: Row, base: int, order: tuple[str, ...], manifest_classes: tuple[str, ...], result: AdapterResult) -> int | None:
    """The manifest label of a numeric row (``order``: the file's class order), or None (bad row)."""
    try:
        index = int(row.label) - base
    except ValueError:
        return None  # already listed by detect_label_base
    if not 0 <= index < len(order):
        result.bad_row(row.where, f"label {row.label} is not {base}..{base + len(order) - 1}")
        return None
    return label_of(manifest_classes, order[index], row.where)


def named_label(row: Row, manifest_classes: tuple[str, ...], result: AdapterResult) -> int | None:
    """The manifest label of a row that names its class (case-insensitive), or None (bad row)."""
    if row.label.lower() in manifest_classes:
        return manifest_classes.index(row.label.lower())
    result.bad_row(row.where, f"label {row.label!r} is not a class of the manifest {list(manifest_classes)}")
    return None
