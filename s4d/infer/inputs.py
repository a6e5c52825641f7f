"""What ``s4d predict`` was given: the media files of folders and ``.txt`` lists (a missing
entry is a problem, never a silent skip), and each file's content key (size, mtime and a
sha256 of its first and last MiB), by which a resumed table tells a finished file from one
that changed at the same path."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Iterable

from preprocess.adapters.base import IMAGE_EXTS, VIDEO_EXTS
from preprocess.errors import InputError

MEDIA_EXTS = IMAGE_EXTS | VIDEO_EXTS
_EDGE = 1 << 20  # bytes hashed at each end of a file


def list_inputs(targets: Iterable[Path]) -> tuple[list[Path], list[str]]:
    """(media files, problems). A folder gives its media files (recursively, sorted); a ``.txt``
    gives one path per line (relative to the list's folder; blank lines and ``#`` comments
    skipped); a listed path that does not exist is a problem, never a silent skip. A list that
    is not UTF-8 raises InputError naming its line and byte."""
    files: list[Path] = []
    problems: list[str] = []
    for target in targets:
        target = Path(target)
        if target.is_dir():
            files += sorted(p for p in target.rglob("*") if p.is_file() and p.suffix.lower() in MEDIA_EXTS)
        elif target.suffix.lower() == ".txt" and target.is_file():
            for i, entry in _list_entries(target):
                path = Path(entry) if Path(entry).is_absolute() else target.parent / entry
                if path.is_file():
                    files.append(path)
                else:
                    problems.append(f"{target}:{i}: {entry}: no such file")
        elif target.is_file():
            files.append(target)
        else:
            problems.append(f"{target}: no such file or folder")
    seen: set[Path] = set()
    unique = [p for p in files if not (p.resolve() in seen or seen.add(p.resolve()))]
    return unique, problems


def _list_entries(listing: Path) -> list[tuple[int, str]]:
    """(line number, entry) of a list file, blank lines and ``#`` comments skipped."""
    raw = listing.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise InputError(f"{listing}: line {line} (byte {err.start}) is not UTF-8: save the list as UTF-8 (e.g. iconv -f latin1 -t utf-8)") from None
    lines = (line.strip() for line in text.splitlines())
    return [(i, entry) for i, entry in enumerate(lines, start=1) if entry and not entry.startswith("#")]


def content_key(path: Path) -> str:
    """``"<size>:<mtime_ns>:<sha256 of the first and last MiB, 32 hex>"``: a file whose content
    changed (even at the same path, size and time) gets another key. Raises OSError if unreadable."""
    size = os.stat(path).st_size
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        h.update(fh.read(_EDGE))
        if size > _EDGE:
            fh.seek(max(size - _EDGE, _EDGE))
            h.update(fh.read(_EDGE))
        mtime = os.fstat(fh.fileno()).st_mtime_ns
    return f"{size}:{mtime}:{h.hexdigest()[:32]}"


def same_content(path: Path, stored: str) -> bool:
    """Whether ``path`` still has the content ``stored`` (a ``content_key``); unreadable: no."""
    try:
        stat = os.stat(path)
        return stored.startswith(f"{stat.st_size}:{stat.st_mtime_ns}:") and content_key(path) == stored
    except OSError:
        return False
