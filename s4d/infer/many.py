"""``s4d predict DIR|LIST.txt --out results.parquet``: many files into one table, resumable.

One row per window (a still image is one row): the file, its kind, the window's frames and
seconds, whether it had a face, the top class, a probability column per class and ``file_key``
(what the file was when it was predicted: size, mtime and a sha256 of its first and last MiB).
Each file's rows go to ``<out>.parts/<digest>.parquet`` as soon as it is done, so a killed run
loses at most the file in progress; a re-run skips every file whose part holds its current key,
and predicts again a file whose content changed (its stale part is removed first, so old and
new rows are never both in the table). A part from before keys (no ``file_key``) counts as not
finished: it cannot tell whether the file changed since. ``<out>`` is merged from the parts at
the end. ``<out>.parts/run.json`` pins the model (a digest of its files) and the settings: a
re-run with another checkpoint or other settings is refused instead of mixing two models in
one table. Every write goes through a temporary name and a rename, so a full disk leaves
nothing half-written that blocks a re-run, and its error names the table. A file that cannot
be read is reported and left out of the table (a re-run retries it); the others are done.
"""

from __future__ import annotations

import hashlib
import json
import os
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from preprocess.errors import InputError
from preprocess.media import MediaError
from preprocess.safe_io import open_new, refuse_symlink
from preprocess.shards.writer import write_json_atomic

from .inputs import content_key, same_content

SETTINGS = ("hop", "stride", "align", "classes", "min_face_fraction", "max_gap_s", "min_track_s", "min_prob", "faces")
KEY_COLUMN = "file_key"  # the column (and the part's schema metadata) holding the file's content key
_KEY_META = b"s4d.file_key"


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
        row = {
            "file": result["input"],
            "kind": result["kind"],
            **({"track": w.get("track")} if "tracks" in result else {}),
            "start_frame": w.get("start_frame", 0),
            "end_frame": w.get("end_frame", 0),
            "start_s": w.get("start_s", 0.0),
            "end_s": w.get("end_s", 0.0),
            "face": bool(w["face"]),
            "top": w.get("top"),
        }
        probs = w.get("probs", {})
        row.update({f"p_{c}": probs.get(c) for c in result["classes"]})
        rows.append(row)
    return rows


def predict_file(predictor: Callable[[Path], dict[str, Any]], path: Path) -> dict[str, Any]:
    """``predictor(path)``, with an image too large to decode safely (PIL's decompression-bomb
    guard) reported as a MediaError naming the file, like any other unreadable file."""
    from PIL import Image

    try:
        return predictor(path)
    except Image.DecompressionBombError as err:
        raise MediaError(f"{path}: unreadable image (DecompressionBombError: {err})") from None


class Table:
    """The output table and its parts folder (``<out>.parts``: ``run.json`` and a part per file)."""

    def __init__(self, out: Path, identity: dict[str, Any]) -> None:
        if out.suffix != ".parquet":
            raise InputError(f"--out {out}: use a .parquet file name for many inputs")
        self.out = out
        self.parts = out.with_name(out.name + ".parts")
        with self._writing(self.parts):
            refuse_symlink(self.parts).mkdir(parents=True, exist_ok=True)
        self._pin(identity)

    def _pin(self, identity: dict[str, Any]) -> None:
        """Refuse a table started with another model or settings; pin this run's otherwise."""
        pin = self.parts / "run.json"
        old = self._read_pin(pin)
        if old is None:
            try:
                with self._writing(pin):
                    write_json_atomic(pin, identity)
            finally:
                _drop_tmp(pin)
            return
        changed = sorted(k for k in set(old) | set(identity) if old.get(k) != identity.get(k))
        if changed:
            raise InputError(
                f"{pin}: this table was started with another model or settings ({', '.join(changed)}); "
                f"finishing it would mix two models: use a new --out"
            )

    def _read_pin(self, pin: Path) -> dict[str, Any] | None:
        """The pinned identity; None when there is none yet, or only an empty file left by a start
        cut short (a full disk: nothing was predicted under it, so it is written again)."""
        if not pin.is_file():
            return None
        raw = pin.read_bytes()
        if not raw.strip():
            return None
        try:
            old = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            old = err
        if not isinstance(old, dict):
            raise InputError(
                f"--out {self.out}: {pin} is not the JSON object s4d writes; delete {self.parts} to start this table over (or use a new --out)"
            )
        return old

    @contextmanager
    def _writing(self, target: Path) -> Iterator[None]:
        """A failed write (full disk, read-only, a library's I/O error) as one InputError naming
        the table and the file."""
        import pyarrow as pa

        try:
            yield
        except (OSError, pa.ArrowException) as err:
            reason = err.strerror if isinstance(err, OSError) and err.strerror else f"{err.__class__.__name__}: {err}"
            raise InputError(
                f"--out {self.out}: cannot write {target} ({reason}); free space (or choose another --out) and "
                f"re-run the same command: finished files are kept"
            ) from None

    def part(self, path: Path) -> Path:
        return self.parts / f"{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:20]}.parquet"

    def finished(self, path: Path) -> bool:
        """Whether ``path``'s part holds rows of its current content (``content_key``; hashed
        only when size and mtime still match). A part of other content (the file changed) or
        without a key (an older table) is removed: the file is predicted again. An unreadable
        part raises InputError naming the table and the part."""
        part = self.part(path)
        if not part.is_file():
            return False
        stored = self._key_of(part, path)
        if stored is not None and same_content(path, stored):
            return True
        with self._writing(part):
            part.unlink()
        return False

    def _key_of(self, part: Path, path: Path) -> str | None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            meta = pq.read_schema(part).metadata or {}
        except (OSError, pa.ArrowException) as err:
            raise InputError(
                f"--out {self.out}: the part {part} (rows of {path}) is unreadable ({err.__class__.__name__}); "
                f"delete that part and re-run the same command to predict {path.name} again"
            ) from None
        key = meta.get(_KEY_META)
        return key.decode() if key else None

    def add(self, path: Path, key: str, rows: list[dict[str, Any]]) -> None:
        """``path``'s rows, each with its ``file_key``, as its part (written whole or not at all)."""
        import pyarrow as pa

        rows = [{**row, KEY_COLUMN: key} for row in rows]
        table = pa.Table.from_pylist(rows) if rows else pa.table({"file": pa.array([], pa.string()), KEY_COLUMN: pa.array([], pa.string())})
        self._write(table.replace_schema_metadata({_KEY_META: key.encode()}), self.part(path))

    def _write(self, table, target: Path) -> None:
        """``table`` to ``target`` via ``TARGET.tmp`` (never through a symlink) and a rename; a
        failed write removes the temporary file and raises InputError naming the table."""
        import pyarrow.parquet as pq

        tmp = target.with_name(target.name + ".tmp")
        try:
            with self._writing(target):
                with open_new(tmp, "wb") as fh:
                    pq.write_table(table, fh)
                os.replace(tmp, target)
        finally:
            _drop_tmp(target)

    def merge(self, files: list[Path]) -> int:
        """Write ``out`` from the parts of ``files`` (in their order); returns the row count."""
        import pyarrow as pa

        tables = [self._read_part(p) for p in files]
        tables = [t.replace_schema_metadata(None) for t in tables if t.num_rows]
        table = pa.concat_tables(tables, promote_options="default") if tables else pa.table({"file": pa.array([], pa.string())})
        self._write(table, self.out)
        return table.num_rows

    def _read_part(self, path: Path):
        import pyarrow as pa
        import pyarrow.parquet as pq

        part = self.part(path)
        try:
            return pq.read_table(part)
        except (OSError, pa.ArrowException) as err:
            raise InputError(
                f"--out {self.out}: the part {part} (rows of {path}) is unreadable ({err.__class__.__name__}); "
                f"delete that part and re-run the same command to predict {path.name} again"
            ) from None


def _drop_tmp(target: Path) -> None:
    """Remove ``TARGET.tmp`` if a failed write left it (a plain file only; a link is left alone)."""
    tmp = target.with_name(target.name + ".tmp")
    if tmp.is_file() and not tmp.is_symlink():
        tmp.unlink()


def _predict_one(predictor, path: Path) -> tuple[str, dict[str, Any]]:
    """(content key, result) of one file, the key taken before reading it (a file changed
    meanwhile is seen as changed by the next run); a file that cannot be opened is a MediaError."""
    try:
        key = content_key(path)
    except OSError as err:
        raise MediaError(f"{path}: cannot read it ({err.strerror or err})") from None
    return key, predict_file(predictor, path)


def predict_many(predictor, files: list[Path], out: Path, *, on_file: Callable[[Path, str], None] = lambda p, s: None) -> dict[str, Any]:
    """Every file not done before (by content); returns counts, the failures (file, reason) and
    the rows. The table's problems (another model, an unreadable part) raise before any file."""
    table = Table(out, model_identity(predictor.cfg))
    before = [p for p in files if table.finished(p)]
    done = set(before)
    failures: list[tuple[str, str]] = []
    for path in files:
        if path in done:
            on_file(path, "done before")
            continue
        try:
            key, result = _predict_one(predictor, path)
        except MediaError as err:
            failures.append((str(path), str(err)))
            on_file(path, "failed")
            continue
        table.add(path, key, rows_of(result))
        done.add(path)
        on_file(path, "done")
    rows = table.merge([p for p in files if p in done])
    return {"files": len(files), "done_before": len(before), "failed": failures, "rows": rows, "out": str(out)}
