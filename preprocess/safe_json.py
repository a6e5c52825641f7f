"""Valid JSON only: every float that is not finite (NaN, +-inf, numpy's included) becomes
``null`` before ``json.dumps(..., allow_nan=False)``, so no file we write holds ``NaN`` or
``Infinity`` (which strict JSON readers refuse). Callers put a count beside a ``null`` where
it needs explaining (e.g. ``support`` beside per-class ``recall``)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from .errors import InputError


def finite(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None (dicts, lists, tuples walked;
    numpy scalars and arrays turned into plain Python values)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    if hasattr(value, "tolist") and hasattr(value, "dtype"):  # numpy scalar or array
        return finite(value.tolist())
    return value


def read_json(path: str | os.PathLike, what: str = "") -> Any:
    """JSON from a file someone else may have written or cut short: a file that is not UTF-8 or
    not JSON is an ``InputError`` naming the file (and ``what`` it is, e.g. "the run's config")
    instead of a bare ``JSONDecodeError`` that names nothing."""
    try:
        return json.loads(Path(path).read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        label = f" ({what})" if what else ""
        raise InputError(f"{path}{label}: not valid JSON ({err}); restore or delete it") from None


def dumps(value: Any, **kwargs: Any) -> str:
    """``json.dumps`` of ``finite(value)``; ``allow_nan=False`` makes any slip an error."""
    return json.dumps(finite(value), allow_nan=False, **kwargs)
