"""Random access to samples inside WebDataset shards, through their DALI index files.

The index (``.idx``, v1.2) gives each component's byte offset and size, so a sample is a slice
of a memory-mapped tar: no tar parsing, no decompression, cheap enough to feed DALI from
Python. Every problem names the shard.
"""

from __future__ import annotations

import mmap
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError


class ShardError(InputError):
    """A shard or its index is missing, truncated or inconsistent; the message names it."""


REBUILD_IDX = "delete it and re-run `s4d shards` to rebuild it from its tar"  # what to do about a bad .idx


@dataclass(frozen=True)
class Location:
    shard: int  # position in ``ShardReader.paths``
    parts: dict[str, tuple[int, int]]  # extension -> (offset, size)


def read_index(idx_path: Path, tar_size: int) -> dict[str, dict[str, tuple[int, int]]]:
    """Parse a v1.2 index: key -> {ext: (offset, size)}; checks offsets fit the tar.

    A garbage index is blamed on itself (the tar's size is checked against ``shards.json``
    before this runs); the message says to delete it and re-run ``s4d shards``, which rebuilds
    it from the tar."""
    try:
        lines = idx_path.read_text().splitlines()
    except OSError as err:
        raise ShardError(f"{idx_path}: cannot read DALI index ({err.strerror}); {REBUILD_IDX}") from None
    except UnicodeDecodeError:
        raise ShardError(f"{idx_path}: DALI index is not text (garbage); {REBUILD_IDX}") from None
    if not lines or not lines[0].startswith("v1.2 "):
        raise ShardError(f"{idx_path}: not a v1.2 DALI index; {REBUILD_IDX}")
    out: dict[str, dict[str, tuple[int, int]]] = {}
    for n, line in enumerate(lines[1:], start=2):
        key, parts = _index_line(idx_path, n, line, tar_size)
        if key is not None:
            out[key] = parts
    return out


def _index_line(idx_path: Path, n: int, line: str, tar_size: int) -> tuple[str | None, dict[str, tuple[int, int]]]:
    """One sample's line ``ext offset size name ...`` -> (key, {ext: (offset, size)})."""
    fields = line.split()
    if len(fields) % 4:
        raise ShardError(f"{idx_path}:{n}: malformed index line; {REBUILD_IDX}")
    parts: dict[str, tuple[int, int]] = {}
    key = None
    for i in range(0, len(fields), 4):
        ext, off, size, name = fields[i], fields[i + 1], fields[i + 2], fields[i + 3]
        if not (off.isdigit() and size.isdigit()) or not name.endswith(f".{ext}"):
            raise ShardError(f"{idx_path}:{n}: malformed index line; {REBUILD_IDX}")
        off, size = int(off), int(size)
        if off + size > tar_size:
            raise ShardError(
                f"{idx_path}:{n}: sample {name} ends at byte {off + size} but {idx_path.with_suffix('.tar').name} "
                f"has {tar_size} bytes (the index does not fit its tar); {REBUILD_IDX}"
            )
        key = name[: -len(ext) - 1]
        parts[ext] = (off, size)
    return key, parts


class ShardReader:
    """``reader[key]["webm"]`` -> the bytes of that component, as a uint8 numpy view."""

    def __init__(self, shard_paths: list[Path]) -> None:
        self.paths = [Path(p) for p in shard_paths]
        self._maps: list[mmap.mmap | None] = [None] * len(self.paths)
        self._lock = threading.Lock()  # the loader's read-ahead thread maps shards too
        self.locations: dict[str, Location] = {}
        for i, tar in enumerate(self.paths):
            if not tar.is_file():
                raise ShardError(f"{tar}: shard missing")
            for key, parts in read_index(tar.with_suffix(".idx"), tar.stat().st_size).items():
                if key in self.locations:
                    raise ShardError(f"{tar}: sample {key} also in {self.paths[self.locations[key].shard]}")
                self.locations[key] = Location(i, parts)

    def _map(self, i: int) -> mmap.mmap:
        with self._lock:
            if self._maps[i] is None:
                with open(self.paths[i], "rb") as fh:
                    self._maps[i] = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
            return self._maps[i]

    def get(self, key: str, ext: str) -> np.ndarray:
        try:
            loc = self.locations[key]
            off, size = loc.parts[ext]
        except KeyError:
            raise ShardError(f"sample {key!r} has no .{ext} component in the shards") from None
        return np.frombuffer(self._map(loc.shard), dtype=np.uint8, count=size, offset=off)

    def __getstate__(self):  # picklable for worker processes: maps are reopened lazily
        state = self.__dict__.copy()
        state["_maps"] = [None] * len(self.paths)
        del state["_lock"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()
