"""The shard folder: its plan, the per-shard records, and the merged index and summary.

A folder holds ``plan.json`` (which sample goes into which shard, written on the first run and
checked on every later one), per shard ``NAME.tar`` + ``NAME.idx`` + ``NAME.record.json`` (the
record is written last: a shard is done when it exists), and, once every shard is done,
``index.parquet`` (one row per sample) and ``shards.json`` (files, checksums, counts, problems).
``verify`` checks a finished folder; ``reader`` reads its samples.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tarfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..adapters import AdapterResult, RawSample
from ..manifest import Manifest, ManifestError, check_name, read_json_file
from .version import FORMAT_VERSION, SUMMARY_FIELD, check_version, index_metadata, index_version
from .writer import write_json_atomic

PLAN_FILE = "plan.json"
LEGACY_SETTINGS = {"geometry": "crop"}  # what a plan written before these settings existed was made with


@dataclass(frozen=True)
class ShardTask:
    name: str
    partition: str
    samples: tuple[RawSample, ...]


def plan_shards(samples: list[RawSample], manifest: Manifest) -> list[ShardTask]:
    per = manifest.preprocess.shard_samples
    tasks = []
    for partition in manifest.partitions:  # checked again here: a Manifest may be built in code
        check_name(partition, "partitions", manifest.source or manifest.name)
        members = sorted((s for s in samples if s.partition == partition), key=lambda s: s.key)
        for i in range(0, len(members), per):
            tasks.append(ShardTask(f"{partition}-{i // per:05d}", partition, tuple(members[i : i + per])))
    return tasks


def record_path(out_dir: Path, name: str) -> Path:
    return out_dir / f"{name}.record.json"


def check_plan(out_dir: Path, manifest: Manifest, tasks: list[ShardTask], adapter: AdapterResult) -> None:
    """Store the plan on the first run; refuse to mix shards of a different plan later."""
    plan = {
        "manifest": manifest.name,
        "classes": list(manifest.classes),
        "preprocess": dataclasses.asdict(manifest.preprocess),
        "shards": {t.name: [[s.key, s.label] for s in t.samples] for t in tasks},
        "excluded": dict(adapter.excluded),
        "listing_problems": [{"id": p.original_id, "reason": p.reason} for p in adapter.problems],
        "release": {"layout": adapter.layout, "label_base": adapter.label_base, "paths": dict(adapter.paths)},  # for humans
    }
    path = out_dir / PLAN_FILE
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ManifestError(f"{path}: unreadable ({err}); remove it and the shards beside it, or use a new --out") from None
        if not isinstance(old, dict):
            raise ManifestError(f"{path}: not a JSON object; remove it and the shards beside it, or use a new --out")
        if isinstance(old.get("preprocess"), dict):  # written before a setting existed: made with its old behaviour
            old["preprocess"] = {**LEGACY_SETTINGS, **old["preprocess"]}
        for field in ("manifest", "classes", "preprocess", "shards"):
            if old.get(field) != plan[field]:
                what = "the samples or their labels" if field == "shards" else field
                detail = _changes(old.get(field), plan[field]) if field == "preprocess" else ""
                raise ManifestError(
                    f"{path}: {what} changed since this output was started{detail}; finishing "
                    "would mix two datasets in one folder: use a new --out directory"
                )
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, plan)


def _changes(old: Any, new: Any) -> str:
    """`` (geometry: crop -> squash)`` for changed settings; empty for anything but two dicts."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return ""
    diff = [f"{k}: {old.get(k)} -> {new.get(k)}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    return f" ({', '.join(diff)})" if diff else ""


def read_index(folder: Path, columns: list[str]) -> dict[str, list]:
    """Columns of a finished folder's ``index.parquet`` (one row per sample), as lists; its
    format version is checked, and an unreadable file or missing column is one line naming it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(folder) / "index.parquet"
    try:
        index_version(path, pq.read_schema(path).metadata)
        return pq.read_table(path, columns=columns).to_pydict()
    except (OSError, pa.ArrowException, KeyError) as err:
        raise ManifestError(
            f"{path}: unreadable ({type(err).__name__}: {str(err).splitlines()[0][:120] if str(err) else ''}); "
            "re-run `s4d shards --merge-only` to rewrite it"
        ) from None


def finalize(manifest: Manifest, out_dir: Path) -> dict[str, Any]:
    """Merge shard records into ``index.parquet`` and ``shards.json``; needs every shard done."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    plan_path = out_dir / PLAN_FILE
    if not plan_path.is_file():
        raise ManifestError(f"{out_dir}: no {PLAN_FILE}; run the shards step first")
    plan = read_json_file(plan_path)
    if not isinstance(plan, dict) or not isinstance(plan.get("shards"), dict):
        raise ManifestError(f"{plan_path}: not a shard plan; remove it and the shards beside it, or use a new --out")
    if plan.get("manifest") != manifest.name or plan.get("classes") != list(manifest.classes):
        raise ManifestError(
            f"{plan_path}: written for manifest {plan.get('manifest')!r} with classes {plan.get('classes')}, "
            f"not {manifest.name!r} with {list(manifest.classes)}"
        )
    for name in plan["shards"]:  # names read back from a file in the folder: they must stay in it
        check_name(name, "shards", plan_path)
    missing = [name for name in plan["shards"] if not record_path(out_dir, name).is_file()]
    if missing:
        raise ManifestError(f"{out_dir}: {len(missing)} shard(s) not done yet ({', '.join(missing[:3])}...): run the remaining --part jobs")
    records = [read_json_file(record_path(out_dir, name)) for name in plan["shards"]]
    for name, rec in zip(plan["shards"], records):
        check_record_files(out_dir, name, rec)
    _refuse_newer_summary(out_dir / "shards.json")
    rows = [r for rec in records for r in rec["samples"]]
    problems = plan["listing_problems"] + [p for rec in records for p in rec["problems"]]
    counts = Counter(r["partition"] for r in rows)
    columns = ["key", "shard", "partition", "label", "frames", "fps", "faces_found", "faces_filled", "source", "original_id"]
    table = pa.table({c: [r[c] for r in rows] for c in columns}) if rows else pa.table({c: [] for c in columns})
    tmp = out_dir / "index.parquet.tmp"
    pq.write_table(table.replace_schema_metadata(index_metadata()), tmp)
    os.replace(tmp, out_dir / "index.parquet")
    summary = {
        SUMMARY_FIELD: FORMAT_VERSION,
        "manifest": manifest.name,
        "shards": [{k: rec[k] for k in ("file", "partition", "count", "bytes", "sha256")} for rec in records if rec["file"]],
        "counts": {p: counts.get(p, 0) for p in manifest.partitions},
        "classes": list(manifest.classes),
        "problems": problems,
        "excluded": plan["excluded"],
        "expected_mismatch": {p: {"expected": n, "written": counts.get(p, 0)} for p, n in manifest.expected.items() if counts.get(p, 0) != n},
    }
    write_json_atomic(out_dir / "shards.json", summary)
    return summary


def check_record_files(out_dir: Path, name: str, record: Any) -> None:
    """Shard ``name``'s record (parsed JSON) and the tar it names must agree (present, the
    recorded size), so ``shards.json`` never lists a file that is not there. Cheap: no hashing."""
    path = record_path(out_dir, name)
    if not isinstance(record, dict) or not isinstance(record.get("samples"), list) or not isinstance(record.get("problems"), list):
        raise ManifestError(f"{path}: not a shard record; delete it and re-run `s4d shards` to rebuild the shard")
    if not record.get("file"):
        return
    tar = out_dir / check_name(record["file"], "file", path)
    size = tar.stat().st_size if tar.is_file() else None
    if size != record.get("bytes"):
        what = "missing" if size is None else f"{size} bytes, its record says {record.get('bytes')}"
        raise ManifestError(f"{tar}: {what}; re-run `s4d shards` (without --merge-only) to rebuild it")


def shard_damage(out_dir: Path, name: str) -> tuple[str, str] | None:
    """Is finished shard ``name`` (its record exists) still what its record says? None when it is;
    else (what to redo, why): ``("shard", why)`` when the record is unreadable or its tar is
    missing, of another size or another sha256 (the samples must be encoded again), or
    ``("index", why)`` when only the ``.idx`` is missing or does not match the tar (rebuilt from it).
    Reads every byte of the tar (sha256): for re-runs of ``s4d shards``, not for every open."""
    from .writer import entries_from_tar, index_text, sha256

    path = record_path(out_dir, name)
    try:
        record = read_json_file(path)
        check_record_files(out_dir, name, record)
    except ManifestError as err:
        return "shard", str(err).removeprefix(f"{out_dir}{os.sep}").split(";")[0]
    if not record["file"]:
        return None  # every sample failed: no tar to check
    tar = out_dir / record["file"]
    if sha256(tar) != record.get("sha256"):
        return "shard", f"{tar.name}: sha256 differs from its record (corrupt)"
    idx = tar.with_suffix(".idx")
    try:
        expected = index_text(entries_from_tar(tar))
    except (OSError, tarfile.TarError) as err:
        return "shard", f"{tar.name}: not a readable tar ({err})"
    try:
        actual = idx.read_text() if idx.is_file() else None
    except (OSError, UnicodeDecodeError):
        actual = ""
    if actual != expected:
        return "index", f"{idx.name} is missing" if actual is None else f"{idx.name} does not match {tar.name}"
    return None


def stale_summary(out_dir: Path) -> str | None:
    """Why ``shards.json`` no longer describes the folder (a tar it lists is missing or of
    another size), or None. Cheap: sizes only. An unreadable or foreign file is left to the
    merge, which rewrites it."""
    try:
        summary = json.loads((out_dir / "shards.json").read_text())
        listed = [(s["file"], s["bytes"]) for s in summary["shards"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    for file, size in listed:
        path = out_dir / str(file)
        if path.parent != out_dir or not path.is_file():
            return f"lists {file}, which is missing"
        if path.stat().st_size != size:
            return f"lists {file} with {size} bytes, it has {path.stat().st_size}"
    return None


def _refuse_newer_summary(path: Path) -> None:
    """Do not overwrite a ``shards.json`` written by a newer s4d (an unreadable one is replaced)."""
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    found = old.get(SUMMARY_FIELD) if isinstance(old, dict) else None
    if isinstance(found, int) and not isinstance(found, bool) and found > FORMAT_VERSION:
        check_version(path, found)


def kept_and_skipped(summary: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """(kept, skipped) per partition from a ``shards.json`` summary; listing problems (media
    missing before any partition was read) count under "(listing)"."""
    skipped = Counter(p.get("partition") or "(listing)" for p in summary["problems"])
    out = {p: (n, skipped.pop(p, 0)) for p, n in summary["counts"].items()}
    out.update({p: (0, n) for p, n in skipped.items()})
    return out


def shortfalls(summary: dict[str, Any], max_skipped: float) -> list[str]:
    """Why a preprocessing result must not pass in silence: a partition left empty, or more
    than ``max_skipped`` of the listed samples skipped. Empty list: fine."""
    reasons = []
    per = kept_and_skipped(summary)
    first = {}
    for prob in summary["problems"]:
        first.setdefault(prob.get("partition") or "(listing)", prob["reason"])
    for p, (kept, skipped) in per.items():
        if kept == 0 and p != "(listing)":
            reasons.append(f"partition {p}: no sample kept ({skipped} skipped{', e.g. ' + first[p] if p in first else ''})")
    kept = sum(k for k, _ in per.values())
    skipped = sum(s for _, s in per.values())
    if kept + skipped and skipped / (kept + skipped) > max_skipped:
        reasons.append(
            f"{skipped} of {kept + skipped} samples skipped ({100 * skipped / (kept + skipped):.1f}% > "
            f"--max-skipped {100 * max_skipped:.0f}%); reasons in shards.json"
        )
    return reasons
