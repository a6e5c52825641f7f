"""``--config FILE``: options of ``s4d train``/``cv``/``pretrain`` from a YAML or JSON file.

Keys are option names as a field (``top_k``, ``loader_threads``) or as a flag without dashes
(``top-k``, ``threads``); values must have the option's type (``null`` where it may be unset).
Precedence: the command line (or an option's environment variable) > the file > the default."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from preprocess.errors import InputError

if TYPE_CHECKING:
    from .from_config import OptionSpec


def read_config_file(path: Path) -> dict[str, Any]:
    """The mapping in ``path`` (``.yaml``/``.yml``: YAML via ``yaml.safe_load``, else JSON)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"--config {path}: cannot read it ({getattr(err, 'strerror', None) or err})") from None
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as err:  # yaml.YAMLError / json.JSONDecodeError: the parser's first line says where
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(f"--config {path}: not valid {'YAML' if path.suffix.lower() in ('.yaml', '.yml') else 'JSON'}: {first}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(f"--config {path}: must hold a mapping of option: value, got a {type(data).__name__}")
    return data


def merge_config_file(path: Path, specs: list[OptionSpec], values: dict[str, Any], given: set[str]) -> dict[str, Any]:
    """``values`` (by parameter name) with those of the file at ``path`` for every option not in
    ``given`` (set on the command line). Unknown keys and wrong types: one line naming file and key."""
    by_key = {key: spec for spec in specs for key in spec.keys}
    merged = dict(values)
    seen: dict[str, str] = {}
    for key, value in read_config_file(path).items():
        spec = by_key.get(str(key))
        if spec is None:
            raise InputError(f"--config {path}: unknown key {key!r} (keys are option names, e.g. top_k or top-k)")
        if spec.name in seen:
            raise InputError(f"--config {path}: keys {seen[spec.name]!r} and {key!r} set the same option")
        seen[spec.name] = str(key)
        checked = _checked(path, key, spec, value)
        if spec.name not in given:
            merged[spec.name] = checked
    return merged


def _checked(path: Path, key: str, spec: OptionSpec, value: Any) -> Any:
    """``value`` if it has ``spec``'s type and range (an int is a float; a path is a str)."""
    where = f"--config {path}: {key}"
    if value is None:
        if spec.optional:
            return None
        raise InputError(f"{where}: may not be null")
    want = str if spec.meta.get("path") else spec.base
    ok = isinstance(value, want) and not (want is int and isinstance(value, bool))
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok:
        raise InputError(f"{where}: expected {want.__name__}, got {type(value).__name__} {value!r}")
    low, high = spec.meta.get("min"), spec.meta.get("max")
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f">= {low}" if high is None else (f"<= {high}" if low is None else f"in {low}..{high}")
        raise InputError(f"{where}: must be {bounds}, got {value}")
    return Path(value) if spec.meta.get("path") else value
