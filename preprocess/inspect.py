"""A human summary of preprocessed shards: counts per partition and class, face statistics."""

from __future__ import annotations

import json
from pathlib import Path

from .manifest import ManifestError, load_manifest


def describe(target: str, data_root: str | Path | None = None) -> str:
    import pyarrow.parquet as pq

    folder = Path(target)
    if not folder.is_dir():
        folder = load_manifest(target).shard_dir(data_root)
    index, summary_path = folder / "index.parquet", folder / "shards.json"
    if not index.is_file() or not summary_path.is_file():
        raise ManifestError(f"{folder}: no index.parquet/shards.json (run `s4d shards` first)")
    summary = json.loads(summary_path.read_text())
    rows = pq.read_table(index).to_pylist()
    classes = summary["classes"]
    lines = [f"{summary['manifest']}: {len(rows)} samples, {len(summary['shards'])} shards, "
             f"{sum(s['bytes'] for s in summary['shards']) / 1e6:.1f} MB in {folder}"]
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
