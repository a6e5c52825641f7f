"""WebDataset shard writing: one tar + its DALI index, written atomically.

``ShardWriter`` is a context manager: components go to ``NAME.tar.tmp``; on a clean exit with
at least one sample the tar, then ``NAME.idx`` (DALI's ``wds2idx`` v1.2 format, computed from the offsets we wrote, no
second pass) are renamed into place; on an exception the temporaries are removed. Members get
fixed metadata (mtime 0, uid/gid 0) so the same samples give byte-identical shards.

What goes into a sample is ``encoding``'s job; this module only writes the bytes it is given.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path
from typing import Any

from ..safe_io import open_new, write_text, write_text_atomic

IDX_VERSION = "v1.2"


def sha256(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


class ShardWriter:
    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if self.path.suffix != ".tar":
            raise ValueError(f"shard path must end in .tar, got {self.path}")
        self.idx_path = self.path.with_suffix(".idx")
        self._tmp = self.path.with_name(self.path.name + ".tmp")
        self._index: list[list[tuple[str, int, int, str]]] = []
        self._keys: set[str] = set()
        self._tar: tarfile.TarFile | None = None
        self.written = False  # True once the tar and index are in place (False for no samples)

    def __enter__(self) -> "ShardWriter":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open_new(self._tmp, "wb")  # a symlink planted at NAME.tar.tmp is refused
        self._tar = tarfile.open(fileobj=self._fh, mode="w", format=tarfile.USTAR_FORMAT)
        return self

    def write(self, key: str, components: dict[str, bytes]) -> None:
        """Add one sample; ``components`` maps extension (no dot) to bytes."""
        assert self._tar is not None, "use ShardWriter as a context manager"
        if "." in key or "/" in key or key in self._keys:
            raise ValueError(f"bad or repeated sample key {key!r} in {self.path}")
        self._keys.add(key)
        entry = []
        for ext, data in components.items():
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            header_at = self._tar.offset  # USTAR: one 512-byte header block, then the data
            self._tar.addfile(info, io.BytesIO(data))
            entry.append((ext, header_at + tarfile.BLOCKSIZE, len(data), info.name))
        self._index.append(entry)

    @property
    def count(self) -> int:
        return len(self._index)

    def __exit__(self, exc_type, exc, tb) -> None:
        assert self._tar is not None
        self._tar.close()
        self._fh.close()  # a tar opened on a file object leaves it open
        if exc_type is not None or not self._index:  # failed, or nothing to write: leave no file
            self._tmp.unlink(missing_ok=True)
            return
        idx_tmp = self.idx_path.with_name(self.idx_path.name + ".tmp")
        write_text(idx_tmp, index_text(self._index))
        os.replace(self._tmp, self.path)
        os.replace(idx_tmp, self.idx_path)
        self.written = True


Entry = list[tuple[str, int, int, str]]  # one sample: (ext, data offset, size, member name) per component


def index_text(entries: list[Entry]) -> str:
    """The ``.idx`` file (DALI ``wds2idx`` v1.2) for ``entries``, one per sample in tar order."""
    lines = [f"{IDX_VERSION} {len(entries)}"]
    lines += [" ".join(f"{ext} {off} {size} {name}" for ext, off, size, name in entry) for entry in entries]
    return "\n".join(lines) + "\n"


def entries_from_tar(tar: Path) -> list[Entry]:
    """The index entries of a shard read back from its members (a sample's components are
    consecutive members ``KEY.EXT``, as ``ShardWriter`` writes them). Raises ``tarfile.TarError``
    or ``OSError`` for an unreadable tar."""
    entries: list[Entry] = []
    last = None
    with tarfile.open(tar) as tf:
        for m in tf.getmembers():
            if not m.isfile():
                continue
            key, _, ext = m.name.partition(".")
            if key != last:
                entries.append([])
                last = key
            entries[-1].append((ext, m.offset_data, m.size, m.name))
    return entries


def rebuild_index(tar: Path) -> None:
    """Rewrite ``NAME.idx`` from ``NAME.tar`` (atomically): a deleted or garbage index is redone
    from the tar without re-encoding anything."""
    write_text_atomic(tar.with_suffix(".idx"), index_text(entries_from_tar(tar)))


def write_json_atomic(path: Path, payload: Any) -> None:
    """``path`` via ``PATH.tmp`` and a rename; a symlink planted at the tmp name is refused (the
    rename replaces a link at ``path`` itself, never its target)."""
    tmp = path.with_name(path.name + ".tmp")
    write_text(tmp, json.dumps(payload, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)
