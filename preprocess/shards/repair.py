"""Re-running ``s4d shards`` repairs: every finished shard of the part is checked against its
record before it is trusted, and what is damaged is undone so the run writes it again."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from .folder import record_path, shard_damage, stale_summary
from .writer import rebuild_index

MERGED = ("shards.json", "index.parquet")  # rewritten by finalize from the records


def repair_finished(out_dir: Path, names: list[str], on_repair: Callable[[str], None] | None = None) -> list[str]:
    """Check the finished shards among ``names`` (``shard_damage``: reads every tar) and undo
    the damaged ones: a bad ``.idx`` alone is rewritten from its tar; otherwise the record, tar
    and ``.idx`` are removed, record first, so the shard is written again from the raw data.
    The merged ``shards.json`` / ``index.parquet`` go before a tar, so they never list a removed file.
    A ``shards.json`` that still lists a missing tar of another part is removed too (``stale_summary``).
    Returns one line per repair (also handed to ``on_repair``)."""
    lines = []
    for name in names:
        if not record_path(out_dir, name).is_file():
            continue
        damage = shard_damage(out_dir, name)
        if damage is None:
            continue
        what, why = damage
        tar = out_dir / f"{name}.tar"
        if what == "index":
            rebuild_index(tar)
            lines.append(f"{tar.with_suffix('.idx')}: rebuilt from {tar.name} ({why})")
        else:
            for merged in MERGED:
                (out_dir / merged).unlink(missing_ok=True)
            for path in (record_path(out_dir, name), tar, tar.with_suffix(".idx")):
                path.unlink(missing_ok=True)
            lines.append(f"{tar}: encoding the shard again from the raw data ({why})")
        if on_repair is not None:
            on_repair(lines[-1])
    stale = stale_summary(out_dir)  # damage in another --part's shards: the merge is stale until that part re-runs
    if stale is not None:
        for merged in MERGED:
            (out_dir / merged).unlink(missing_ok=True)
        lines.append(f"{out_dir / 'shards.json'}: removed with index.parquet ({stale}); re-run the part that holds it, then the merge rewrites both")
        if on_repair is not None:
            on_repair(lines[-1])
    return lines
