"""Are these shards what ``shards.json`` and ``index.parquet`` say they are?

``verify_shards`` runs on every open (training, eval, analysis) and must stay cheap: the
summary's fields and types, every listed tar present with its recorded size and its ``.idx``,
no index row naming a shard that is not listed, no key twice, labels in range, counts per
partition and per shard equal. With ``checksums`` (``s4d inspect --verify``) it also reads
everything: each tar against its sha256, each ``.idx`` against the tar's real member offsets,
each sample's own record (label, frame count) against its index row, no tar in the folder that
``shards.json`` does not list, and at least one shard. Every failure is one ``ManifestError``
naming the file (and the sample).
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

from ..manifest import Manifest, ManifestError, read_json_file
from .encoding import unpack_info
from .reader import REBUILD_IDX, ShardError, ShardReader, read_index
from .version import SUMMARY_FIELD, check_version, index_version
from .writer import entries_from_tar, sha256

SHARD_FIELDS = {"file": str, "partition": str, "count": int, "bytes": int, "sha256": str}
INDEX_COLUMNS = ("key", "shard", "partition", "label", "frames")
INFO_BYTES = 16  # four little-endian int32 (encoding.pack_info)
SPOT_CHECKS = 3  # records per shard compared with index.parquet on every open (first, middle, last)


def _summary(path: Path, manifest: Manifest) -> dict[str, Any]:
    if not path.is_file():
        raise ManifestError(f"{path}: missing; preprocess first (s4d shards --manifest {manifest.name})")
    summary = read_json_file(path)
    if not isinstance(summary, dict):
        raise ManifestError(f"{path}: must be a JSON object; re-run `s4d shards` to rewrite it")
    check_version(path, summary.get(SUMMARY_FIELD))
    missing = sorted({"manifest", "classes", "shards", "counts"} - set(summary))
    if missing:
        raise ManifestError(f"{path}: missing field(s) {missing}; re-run `s4d shards` to rewrite it")
    if not isinstance(summary["shards"], list):
        raise ManifestError(f"{path}: shards: expected a list, got {type(summary['shards']).__name__}")
    for i, shard in enumerate(summary["shards"]):
        if not isinstance(shard, dict):
            raise ManifestError(f"{path}: shards[{i}]: expected an object")
        for key, kind in SHARD_FIELDS.items():
            if not isinstance(shard.get(key), kind) or isinstance(shard.get(key), bool):
                raise ManifestError(f"{path}: shards[{i}].{key}: expected {kind.__name__}, got {shard.get(key)!r:.40}")
    counts = summary["counts"]
    if not isinstance(counts, dict) or not all(isinstance(v, int) and not isinstance(v, bool) for v in counts.values()):
        raise ManifestError(f"{path}: counts: expected an object of integers, got {counts!r:.60}")
    if summary["manifest"] != manifest.name:
        raise ManifestError(f"{path}: written for manifest {summary['manifest']!r}, not {manifest.name!r}")
    if not isinstance(summary["classes"], list) or tuple(summary["classes"]) != manifest.classes:
        raise ManifestError(f"{path}: classes {summary['classes']} differ from the manifest's {list(manifest.classes)}")
    return summary


def _index(path: Path) -> dict[str, list]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not path.is_file():
        raise ManifestError(f"{path}: missing; re-run `s4d shards --merge-only` to rewrite it")
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as err:
        raise ManifestError(
            f"{path}: unreadable ({type(err).__name__}: {str(err).splitlines()[0][:120]}); re-run `s4d shards --merge-only` to rewrite it"
        ) from None
    index_version(path, table.schema.metadata)
    missing = [c for c in INDEX_COLUMNS if c not in table.column_names]
    if missing:
        raise ManifestError(f"{path}: column(s) {missing} missing")
    return table.select(list(INDEX_COLUMNS)).to_pydict()


def verify_shards(manifest: Manifest, folder: str | os.PathLike, *, checksums: bool = False) -> dict[str, Any]:
    """The checks above; returns the ``shards.json`` summary."""
    folder = Path(folder)
    summary = _summary(folder / "shards.json", manifest)
    listed = {s["file"]: s for s in summary["shards"]}
    for shard in summary["shards"]:
        tar = folder / shard["file"]
        if not tar.is_file():
            raise ManifestError(f"{tar}: shard listed in shards.json is missing")
        if tar.stat().st_size != shard["bytes"]:
            raise ManifestError(f"{tar}: {tar.stat().st_size} bytes, shards.json says {shard['bytes']} (corrupt or truncated)")
        if not tar.with_suffix(".idx").is_file():
            raise ManifestError(f"{tar.with_suffix('.idx')}: DALI index missing")
    index_path = folder / "index.parquet"
    index = _index(index_path)
    twice = [k for k, n in Counter(index["key"]).items() if n > 1]
    if twice:
        raise ManifestError(f"{index_path}: sample key(s) listed twice: {twice[:3]}")
    unlisted = sorted(set(index["shard"]) - set(listed))
    if unlisted:
        raise ManifestError(f"{index_path}: names shard(s) not in shards.json: {unlisted[:3]}")
    per_partition = Counter(index["partition"])
    for partition, count in summary["counts"].items():
        if per_partition.get(partition, 0) != count:
            raise ManifestError(f"{index_path}: {per_partition.get(partition, 0)} rows for {partition}, shards.json says {count}")
    per_shard = Counter(index["shard"])
    for name, shard in listed.items():
        if per_shard.get(name, 0) != shard["count"]:
            raise ManifestError(f"{index_path}: {per_shard.get(name, 0)} rows in {name}, shards.json says {shard['count']}")
    bad = sorted({lab for lab in index["label"] if not isinstance(lab, int) or not -1 <= lab < len(manifest.classes)})
    if bad:
        raise ManifestError(f"{index_path}: labels {bad} outside the manifest's {len(manifest.classes)} classes")
    if checksums:
        _deep(manifest, folder, summary, index)
    return summary


def _deep(manifest: Manifest, folder: Path, summary: dict[str, Any], index: dict[str, list]) -> None:

    if not summary["shards"]:
        raise ManifestError(f"{folder / 'shards.json'}: lists no shards (nothing was written)")
    on_disk = sorted(p.name for p in folder.glob("*.tar"))
    stray = sorted(set(on_disk) - {s["file"] for s in summary["shards"]})
    if stray:
        raise ManifestError(f"{folder}: tar(s) not listed in shards.json: {stray[:3]} (renamed or left from another run?)")
    rows = {k: (s, lab, fr) for k, s, lab, fr in zip(index["key"], index["shard"], index["label"], index["frames"])}
    seen: set[str] = set()
    for shard in summary["shards"]:
        tar = folder / shard["file"]
        if sha256(tar) != shard["sha256"]:
            raise ManifestError(f"{tar}: sha256 differs from shards.json (corrupt)")
        try:
            entries = read_index(tar.with_suffix(".idx"), tar.stat().st_size)
        except ShardError as err:
            raise ManifestError(str(err)) from None
        members = {name: (off, size) for entry in entries_from_tar(tar) for _, off, size, name in entry}
        indexed = {f"{key}.{ext}": part for key, parts in entries.items() for ext, part in parts.items()}
        if indexed != members:
            wrong = sorted(set(indexed.items()) ^ set(members.items()))[:2]
            raise ManifestError(f"{tar.with_suffix('.idx')}: does not match {tar.name} (e.g. {wrong}); {REBUILD_IDX}")
        with open(tar, "rb") as fh:
            for key, parts in entries.items():
                if key not in rows or rows[key][0] != shard["file"]:
                    raise ManifestError(f"{tar}: sample {key} is not in index.parquet under this shard")
                if "info" not in parts:
                    raise ManifestError(f"{tar}: sample {key} has no info record")
                seen.add(key)
                fh.seek(parts["info"][0])
                info = _info(fh.read(parts["info"][1]), tar, key)
                _, label, frames = rows[key]
                if (info["label"], info["frames"]) != (label, frames):
                    raise label_mismatch(folder / "index.parquet", key, label, frames, info, tar.name)
    missing = sorted(set(rows) - seen)
    if missing:
        raise ManifestError(f"{folder / 'index.parquet'}: sample(s) {missing[:3]} are not in the shards they are listed under")


def label_mismatch(index_path: Path, key: str, label: int, frames: int, info: dict[str, int], shard: str) -> ManifestError:
    """The one-line error for an index row that disagrees with its sample's own ``.info`` record."""
    return ManifestError(
        f"{index_path}: sample {key}: label {label}, {frames} frames, but its own record in {shard} says "
        f"label {info['label']}, {info['frames']} frames; re-run `s4d shards --merge-only` to rewrite "
        "index.parquet from the shard records (`s4d inspect --verify` checks every sample)"
    )


def _info(raw: bytes, tar: Path, key: str) -> dict[str, int]:
    """A sample's ``.info`` record (16 bytes) unpacked; any other size is one line naming the tar."""
    if len(raw) != INFO_BYTES:
        raise ManifestError(
            f"{tar}: sample {key}: .info record is {len(raw)} bytes, not {INFO_BYTES} (corrupt shard or .idx); "
            "re-run `s4d shards` to repair the folder"
        )
    return unpack_info(raw)


def spot_positions(n: int, k: int = SPOT_CHECKS) -> list[int]:
    """At most ``k`` distinct positions in ``range(n)``, evenly spaced, first and last included."""
    if n <= k:
        return list(range(n))
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)}) if k > 1 else [0]


def spot_check(index_path: Path, reader: ShardReader, rows: list[tuple[str, str, int, int]], classes: int, k: int = SPOT_CHECKS) -> None:
    """Cheap check of ``index.parquet`` against the shards, for every open: per shard, ``k``
    of its ``rows`` (key, shard file, label, frames) are read through the ``.idx`` offsets and
    their ``.info`` record compared (a few small reads per shard; no hashing). A record that
    cannot be right (label outside ``classes``, no frames) is a ``ShardError`` naming the tar;
    a disagreement is a ``ManifestError`` naming ``index.parquet`` and the shard."""
    by_shard: dict[str, list[tuple[str, int, int]]] = {}
    for key, shard, label, frames in rows:
        by_shard.setdefault(shard, []).append((key, label, frames))
    for shard, members in by_shard.items():
        for i in spot_positions(len(members), k):
            key, label, frames = members[i]
            loc = reader.locations.get(key)
            if loc is None or reader.paths[loc.shard].name != shard or "info" not in loc.parts:
                raise ManifestError(
                    f"{index_path}: sample {key} is listed under {shard}, but {shard} has no such sample "
                    "(by its .idx); re-run `s4d shards` to repair the folder"
                )
            info = _info(bytes(reader.get(key, "info")), reader.paths[loc.shard], key)
            if not -1 <= info["label"] < classes or info["frames"] < 1:
                raise ShardError(
                    f"{reader.paths[loc.shard]}: sample {key}: its .info record is garbage (label {info['label']}, "
                    f"{info['frames']} frames): the tar is corrupt; re-run `s4d shards` to rebuild it"
                )
            if (info["label"], info["frames"]) != (label, frames):
                raise label_mismatch(index_path, key, label, frames, info, shard)
