"""The shard set's format version, written into ``shards.json`` and ``index.parquet``.

``shards.json`` carries ``"format_version": N``; ``index.parquet`` carries it in its schema
metadata under ``s4d.format_version``. A file without it was written before versions existed
and is read as version 1 (the format did not change). Readers call ``check_version``: a version
newer than ``FORMAT_VERSION`` asks to upgrade s4d; anything else this code cannot read (an
older incompatible version, a value that is not a positive integer) asks to rebuild the shards.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import InputError

FORMAT_VERSION = 1  # raise when shards.json, index.parquet, records or tar members change incompatibly
READABLE = frozenset({1})  # versions this code reads
SUMMARY_FIELD = "format_version"
INDEX_META_KEY = b"s4d.format_version"


class FormatVersionError(InputError):
    """A shard file's format version is not one this s4d reads; the message says what to do."""


def check_version(path: str | Path, found: Any) -> int:
    """The version ``found`` in ``path`` (None: the field is absent, read as 1), checked.

    Returns it as an int; raises ``FormatVersionError`` naming the file otherwise."""
    if found is None:
        return 1
    if isinstance(found, int) and not isinstance(found, bool):
        if found in READABLE:
            return found
        if found > FORMAT_VERSION:
            raise FormatVersionError(f"{path}: shard format version {found} is newer than this s4d reads ({FORMAT_VERSION}); upgrade s4d")
    raise FormatVersionError(
        f"{path}: shard format version {found!r:.40} is not one this s4d reads ({FORMAT_VERSION}); re-run `s4d shards` to rebuild"
    )


def index_version(path: str | Path, metadata: dict[bytes, bytes] | None) -> int:
    """The checked version in an ``index.parquet`` schema's ``metadata`` (absent: 1)."""
    raw = (metadata or {}).get(INDEX_META_KEY)
    if raw is None:
        return check_version(path, None)
    text = raw.decode("utf-8", "replace")
    return check_version(path, int(text) if text.isdigit() else text)


def index_metadata() -> dict[bytes, bytes]:
    """The schema metadata ``finalize`` writes into ``index.parquet``."""
    return {INDEX_META_KEY: str(FORMAT_VERSION).encode()}
