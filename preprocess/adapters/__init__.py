"""Raw layout adapters: one per dataset release, each turning the official files into a list of
``RawSample`` (what to read, its label in the manifest's class order, its partition).

Nothing is dropped silently: a listed sample whose media is missing becomes a ``Problem``;
samples left out on purpose (e.g. AffectNet's contempt in AffectNet-7) are counted in
``excluded`` by reason.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Callable

from ..manifest import Manifest, ManifestError
from .base import AdapterResult, Problem, RawSample, sanitise_key

Adapter = Callable[[Path, Manifest], AdapterResult]


def list_samples(raw_root: str | Path, manifest: Manifest, *, strict: bool = True) -> AdapterResult:
    """Run the manifest's adapter on ``raw_root`` and check the result's invariants. With
    ``strict`` (a real run) a release with unreadable rows or inconsistent folds is refused; the
    dry run passes ``strict=False`` and lists them all in ``release_problems``."""
    from . import affectnet, csvfile, dfew, ferv39k, mafw, voxceleb2

    adapters: dict[str, Adapter] = {
        "dfew": dfew.list_dfew,
        "ferv39k": ferv39k.list_ferv39k,
        "mafw": mafw.list_mafw,
        "affectnet": affectnet.list_affectnet,
        "voxceleb2": voxceleb2.list_voxceleb2,
        "csv": csvfile.list_csv,
    }
    raw_root = Path(raw_root)
    if not raw_root.is_dir():
        raise ManifestError(f"raw root {raw_root} is not a directory")
    result = adapters[manifest.layout.adapter](raw_root, manifest)
    dupes = [k for k, n in Counter(s.key for s in result.samples).items() if n > 1]
    if dupes:
        result.release_problems.append(Problem("keys", f"{manifest.name}: duplicate sample keys after sanitising: {dupes[:5]}"))
    if strict and result.release_problems:
        first, more = result.release_problems[0].reason, len(result.release_problems) - 1
        tail = f" (and {more} more problem(s) in the release's files; `s4d shards --dry-run` lists them)" if more else ""
        raise ManifestError(first + tail)
    unknown = {s.partition for s in result.samples} - set(manifest.partitions)
    if unknown:
        raise ManifestError(f"{manifest.name}: adapter produced unknown partition(s) {sorted(unknown)}")
    return result


__all__ = ["AdapterResult", "Problem", "RawSample", "list_samples", "sanitise_key"]
