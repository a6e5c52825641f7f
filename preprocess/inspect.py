"""A human summary of preprocessed shards: counts per partition and class, face statistics."""

from __future__ import annotations

from pathlib import Path

from .manifest import Manifest, ManifestError, load_manifest, parse_manifest, read_json_file
from .shards.folder import read_index
from .shards.verify import verify_shards
from .shards.version import SUMMARY_FIELD, check_version


def _resolve(target: str, data_root: str | Path | None) -> tuple[Path, Manifest | None]:
    """A shard folder (its manifest: ``manifest.json`` inside, or the name in ``shards.json``)
    or a manifest name/path (its folder under the data root)."""
    folder = Path(target)
    if folder.is_dir():
        if (folder / "manifest.json").is_file():
            return folder, parse_manifest(read_json_file(folder / "manifest.json"), folder / "manifest.json")
        if (folder / "shards.json").is_file():
            try:
                return folder, load_manifest(read_json_file(folder / "shards.json")["manifest"])
            except (ManifestError, KeyError, TypeError):
                return folder, None
        return folder, None
    m = load_manifest(target)
    return m.shard_dir(data_root), m


def verify_folder(target: str, data_root: str | Path | None = None) -> str:
    folder, manifest = _resolve(target, data_root)
    if manifest is None:
        raise ManifestError(f"{folder}: no manifest.json here and its manifest name is not in manifests/; pass the manifest instead")
    summary = verify_shards(manifest, folder, checksums=True)
    return (
        f"  verified: {len(summary['shards'])} shards match shards.json (sizes, sha256, counts, classes); every .idx matches "
        "its tar; every index.parquet row matches its sample's own record"
    )


ROW_COLUMNS = ["partition", "label", "frames", "faces_found", "faces_filled"]


def _unverified_summary(path: Path) -> dict:
    """``shards.json`` without its manifest: its version and the fields ``describe`` reads."""
    summary = read_json_file(path)
    if not isinstance(summary, dict):
        raise ManifestError(f"{path}: must be a JSON object; re-run `s4d shards` to rewrite it")
    check_version(path, summary.get(SUMMARY_FIELD))
    missing = sorted({"manifest", "classes", "shards", "counts", "problems"} - set(summary))
    if missing:
        raise ManifestError(f"{path}: missing field(s) {missing}; re-run `s4d shards` to rewrite it")
    return summary


def describe(target: str, data_root: str | Path | None = None) -> str:
    folder, manifest = _resolve(target, data_root)
    index, summary_path = folder / "index.parquet", folder / "shards.json"
    if not index.is_file() or not summary_path.is_file():
        raise ManifestError(f"{folder}: no index.parquet/shards.json (run `s4d shards` first)")
    summary = verify_shards(manifest, folder) if manifest is not None else _unverified_summary(summary_path)  # the cheap checks
    table = read_index(folder, ROW_COLUMNS)
    rows = [dict(zip(ROW_COLUMNS, values)) for values in zip(*(table[c] for c in ROW_COLUMNS))]
    classes = summary["classes"]
    lines = [
        f"{summary['manifest']}: {len(rows)} samples, {len(summary['shards'])} shards, "
        f"{sum(s['bytes'] for s in summary['shards']) / 1e6:.1f} MB in {folder}"
    ]
    for partition, count in summary["counts"].items():
        per_class = {c: 0 for c in classes}
        for r in rows:
            if r["partition"] == partition and r["label"] >= 0:
                per_class[classes[r["label"]]] += 1
        detail = ", ".join(f"{c} {n}" for c, n in per_class.items() if n)
        lines.append(f"  {partition}: {count}" + (f" ({detail})" if detail else ""))
    frames = sum(r["frames"] for r in rows)
    found = sum(r["faces_found"] for r in rows)
    filled = sum(r["faces_filled"] for r in rows)
    if found:
        lines.append(f"  faces: found in {found}/{frames} frames, {filled} filled from the nearest detected frame")
    lines.append(f"  skipped samples: {len(summary['problems'])}" + (f" (first: {summary['problems'][0]['reason']})" if summary["problems"] else ""))
    return "\n".join(lines)
