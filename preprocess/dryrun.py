"""``s4d shards --dry-run``: what a preprocessing run would write, without decoding any media.

The adapter lists the release (split files read, media checked for existence only), and the
report counts samples per partition and class, the folds' train/test sizes, the shards that
would be written, problems (missing media, unreadable rows, inconsistent folds), exclusions,
and which form of the release was found with its label base. A user runs it before a job of
hours; it reads nothing but the split files and directory entries.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path
from typing import Any

from .adapters import list_samples
from .manifest import Manifest

UNLABELLED = "(unlabelled)"


def dry_run(manifest: Manifest, raw_root: str | Path) -> dict[str, Any]:
    """The report as a JSON-ready dict (``samples``, ``partitions``, ``classes``, ``problems``,
    ``excluded``, ``layout``, ``label_base``, ...)."""
    result = list_samples(raw_root, manifest, strict=False)
    names = [manifest.classes[s.label] if s.label >= 0 else UNLABELLED for s in result.samples]
    by_partition = Counter(s.partition for s in result.samples)
    by_class = Counter(names)
    table = Counter((s.partition, n) for s, n in zip(result.samples, names))
    labelled = any(s.label >= 0 for s in result.samples) or not result.samples
    class_order = (list(manifest.classes) if labelled else []) + ([UNLABELLED] if by_class[UNLABELLED] else [])
    per = manifest.preprocess.shard_samples
    return {
        "manifest": manifest.name,
        "raw": str(raw_root),
        "layout": result.layout,
        "label_base": result.label_base,
        "paths": dict(result.paths),
        "samples": len(result.samples),
        "partitions": {p: by_partition.get(p, 0) for p in manifest.partitions},
        "classes": {c: by_class.get(c, 0) for c in class_order},
        "partition_classes": {p: {c: table[p, c] for c in class_order if table[p, c]} for p in manifest.partitions},
        "folds": {
            name: {role: sum(by_partition.get(p, 0) for p in getattr(f, role)) for role in ("train", "val", "test")}
            for name, f in manifest.folds.items()
        },
        "shards": sum(-(-by_partition.get(p, 0) // per) for p in manifest.partitions),
        "problems": [{"kind": "release", "id": p.original_id, "reason": p.reason} for p in result.release_problems]
        + [{"kind": "media", "id": p.original_id, "reason": p.reason} for p in result.problems],
        "excluded": dict(result.excluded),
        "expected_mismatch": {
            p: {"expected": n, "listed": by_partition.get(p, 0)} for p, n in manifest.expected.items() if by_partition.get(p, 0) != n
        },
        "preprocess": dataclasses.asdict(manifest.preprocess),
    }


def print_report(report: dict[str, Any], console: Any, show_problems: int = 10) -> None:
    """The report as a table of classes x partitions and a few lines (rich console)."""
    from rich.table import Table

    base = report["label_base"]
    base_text = {0: "0-based numbers", 1: "1-based numbers", "names": "class names", "none": "no labels"}.get(base, str(base))
    console.print(
        f"[bold]{report['manifest']}[/]: {report['raw']} read as the [bold]{report['layout']}[/] form, labels as "
        f"{base_text} ({', '.join(f'{k} {v}' for k, v in report['paths'].items())})",
        highlight=False,
    )
    parts = list(report["partitions"])
    table = Table("class", *parts, "total", title="samples that would be written (dry run: no media decoded)")
    for c, n in report["classes"].items():
        table.add_row(c, *(str(report["partition_classes"].get(p, {}).get(c, 0)) for p in parts), str(n))
    table.add_row("[bold]all[/]", *(str(report["partitions"][p]) for p in parts), f"[bold]{report['samples']}[/]")
    console.print(table)
    if len(report["folds"]) > 1 or any(v["val"] for v in report["folds"].values()):
        console.print(
            "folds: "
            + "; ".join(
                f"{name} train {v['train']} / test {v['test']}" + (f" / val {v['val']}" if v["val"] else "") for name, v in report["folds"].items()
            ),
            highlight=False,
        )
    console.print(
        f"{report['shards']} shard(s) of up to {report['preprocess']['shard_samples']} samples; framing: "
        f"{report['preprocess']['geometry']}, align {report['preprocess']['align']}, "
        f"size {report['preprocess']['size']}",
        highlight=False,
    )
    if report["excluded"]:
        console.print("excluded on purpose: " + ", ".join(f"{k} {v}" for k, v in report["excluded"].items()), highlight=False)
    for p, d in report["expected_mismatch"].items():
        console.print(f"[yellow]warning:[/] partition {p}: the release has {d['expected']} samples, {d['listed']} listed", highlight=False)
    problems = report["problems"]
    if problems:
        kinds = Counter(p["kind"] for p in problems)
        console.print(
            f"[yellow]{len(problems)} problem(s)[/] ({', '.join(f'{k} {v}' for k, v in kinds.items())}); "
            "release problems stop a real run, media problems skip the sample:",
            highlight=False,
        )
        for p in problems[:show_problems]:
            console.print(f"  {p['reason']}", highlight=False, soft_wrap=True)
        if len(problems) > show_problems:
            console.print(f"  ... and {len(problems) - show_problems} more (--json lists all)", highlight=False)
    else:
        console.print("no problems found", highlight=False)
