"""Valid JSON only: every float that is not finite (NaN, +-inf, numpy's included) becomes
``null`` before ``json.dumps(..., allow_nan=False)``, so no file we write holds ``NaN`` or
``Infinity`` (which strict JSON readers refuse). Callers put a count beside a ``null`` where
it needs explaining (e.g. ``support`` beside per-class ``recall``)."""

from __future__ import annotations

import json
import math
from typing import Any


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


def dumps(value: Any, **kwargs: Any) -> str:
    """``json.dumps`` of ``finite(value)``; ``allow_nan=False`` makes any slip an error."""
    return json.dumps(finite(value), allow_nan=False, **kwargs)
