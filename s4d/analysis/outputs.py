"""Where an analysis writes: its folder claimed for kind ``analyze`` (``preprocess.ownership``:
never a training run's, earlier files of the same analysis replaced only with ``force``) and
its JSON written as strict JSON without following a symlink."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from preprocess.ownership import check, claim
from preprocess.safe_io import write_text
from preprocess.safe_json import dumps

from . import WRITES


def check_out(out: Path, analysis: str, *, force: bool) -> None:
    """Refuse ``out`` for ``analysis`` before any work (writes nothing)."""
    check(Path(out), "analyze", force=force, writes=WRITES[analysis])


def claim_out(out: Path, analysis: str, *, force: bool) -> Path:
    """``out`` made ours for ``analysis``: created, marked, its earlier files removed (``force``)."""
    return claim(Path(out), "analyze", force=force, writes=WRITES[analysis])


def write_result(out: Path, analysis: str, result: dict[str, Any], *, force: bool) -> Path:
    """Claim ``out`` and write ``result`` as ``WRITES[analysis][0]`` (the analysis' JSON); returns its path."""
    path = claim_out(out, analysis, force=force) / WRITES[analysis][0]
    write_text(path, dumps(result, indent=2) + "\n")
    return path
