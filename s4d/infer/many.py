"""``s4d predict DIR|LIST.txt --out results.parquet``: many files into one table, resumable.

One row per window (a still image is one row): the file, its kind, the window's frames and
seconds, whether it had a face, the top class and a probability column per class. Each file's
rows go to ``<out>.parts/<digest>.parquet`` as soon as it is done, so a killed run loses at most
the file in progress and a re-run skips every finished file; ``<out>`` is merged from the parts
at the end. ``<out>.parts/run.json`` pins the model (a digest of its files) and the settings: a
re-run with another checkpoint or other settings is refused instead of mixing two models in
one table. A file that cannot be read is reported and left out of the table (a re-run retries
it); the others are done.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Iterable

from preprocess.adapters.base import IMAGE_EXTS, VIDEO_EXTS
from preprocess.media import MediaError

MEDIA_EXTS = IMAGE_EXTS | VIDEO_EXTS
SETTINGS = ("hop", "stride", "align", "classes", "min_face_fraction", "max_gap_s", "min_track_s", "min_prob", "faces")


def list_inputs(targets: Iterable[Path]) -> tuple[list[Path], list[str]]:
    """(media files, problems). A folder gives its media files (recursively, sorted); a ``.txt``
    gives one path per line (relative to the list's folder; blank lines and ``#`` comments
    skipped); a listed path that does not exist is a problem, never a silent skip."""
    files: list[Path] = []
    problems: list[str] = []
    for target in targets:
        target = Path(target)
        if target.is_dir():
            files += sorted(p for p in target.rglob("*") if p.is_file() and p.suffix.lower() in MEDIA_EXTS)
        elif target.suffix.lower() == ".txt" and target.is_file():
            for i, line in enumerate(target.read_text(encoding="utf-8").splitlines(), start=1):
                entry = line.strip()
                if not entry or entry.startswith("#"):
                    continue
                path = Path(entry) if Path(entry).is_absolute() else target.parent / entry
                if path.is_file():
                    files.append(path)
                else:
                    problems.append(f"{target}:{i}: {entry}: no such file")
        elif target.is_file():
            files.append(target)
        else:
            problems.append(f"{target}: no such file or folder")
    seen: set[Path] = set()
    unique = [p for p in files if not (p.resolve() in seen or seen.add(p.resolve()))]
    return unique, problems


def _digest(paths: Iterable[Path]) -> str:
    h = hashlib.sha256()
    for path in paths:
        if path.is_file():
            with open(path, "rb") as fh:
                while block := fh.read(1 << 20):
                    h.update(block)
    return h.hexdigest()[:16]


def model_identity(cfg) -> dict[str, Any]:
    """What the table's numbers depend on: the model's files (by content) and the settings."""
    from ..checkpoint.hub import resolve

    source = resolve(cfg.onnx or cfg.checkpoint)
    files = [source, source.with_suffix(".json")] if source.suffix == ".safetensors" else [source]
    return {"model": str(source), "model_digest": _digest(files), **{k: v for k, v in asdict(cfg).items() if k in SETTINGS}}


def rows_of(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The result of one file as table rows (one per window; an image is one row)."""
    rows = []
    for w in result["windows"]:
        row = {"file": result["input"], "kind": result["kind"], **({"track": w.get("track")} if "tracks" in result else {}),
               "start_frame": w.get("start_frame", 0),
               "end_frame": w.get("end_frame", 0), "start_s": w.get("start_s", 0.0), "end_s": w.get("end_s", 0.0),
               "face": bool(w["face"]), "top": w.get("top")}
        probs = w.get("probs", {})
        row.update({f"p_{c}": probs.get(c) for c in result["classes"]})
        rows.append(row)
    return rows


class Table:
    """The output table and its parts folder."""

    def __init__(self, out: Path, identity: dict[str, Any]) -> None:
        if out.suffix != ".parquet":
            raise ValueError(f"--out {out}: use a .parquet file name for many inputs")
        self.out = out
        self.parts = out.with_name(out.name + ".parts")
        self.parts.mkdir(parents=True, exist_ok=True)
        pin = self.parts / "run.json"
        if pin.is_file():
            old = json.loads(pin.read_text())
            changed = sorted(k for k in set(old) | set(identity) if old.get(k) != identity.get(k))
            if changed:
                raise ValueError(f"{pin}: this table was started with another model or settings ({', '.join(changed)}); "
                                 f"finishing it would mix two models: use a new --out")
        else:
            pin.write_text(json.dumps(identity, indent=2) + "\n")

    def part(self, path: Path) -> Path:
        return self.parts / f"{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:20]}.parquet"

    def done(self, path: Path) -> bool:
        return self.part(path).is_file()

    def add(self, path: Path, rows: list[dict[str, Any]]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        target = self.part(path)
        tmp = target.with_name(target.name + ".tmp")
        pq.write_table(pa.Table.from_pylist(rows) if rows else pa.table({"file": pa.array([], pa.string())}), tmp)
        os.replace(tmp, target)

    def merge(self, files: list[Path]) -> int:
        """Write ``out`` from the parts of ``files`` (in their order); returns the row count."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        tables = [pq.read_table(self.part(p)) for p in files if self.done(p)]
        tables = [t for t in tables if t.num_rows]
        table = pa.concat_tables(tables, promote_options="default") if tables else pa.table({"file": pa.array([], pa.string())})
        tmp = self.out.with_name(self.out.name + ".tmp")
        pq.write_table(table, tmp)
        os.replace(tmp, self.out)
        return table.num_rows


def predict_many(predictor, files: list[Path], out: Path, *, on_file: Callable[[Path, str], None] = lambda p, s: None
                 ) -> dict[str, Any]:
    """Every file not done before; returns counts, the failures (file, reason) and the rows."""
    table = Table(out, model_identity(predictor.cfg))
    before = [p for p in files if table.done(p)]
    failures: list[tuple[str, str]] = []
    for path in files:
        if table.done(path):
            on_file(path, "done before")
            continue
        try:
            result = predictor(path)
        except MediaError as err:
            failures.append((str(path), str(err)))
            on_file(path, "failed")
            continue
        table.add(path, rows_of(result))
        on_file(path, "done")
    rows = table.merge(files)
    return {"files": len(files), "done_before": len(before), "failed": failures, "rows": rows, "out": str(out)}
