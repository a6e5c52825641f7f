"""Typed JSON: does an object from a JSON file fit a dataclass? Unknown, missing and mistyped
keys are one error naming the file, the field, the expected type and what was found, e.g.
``preprocess.size: expected an integer, got a string ("160")``."""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, Literal

from .errors import InputError


def _type_ok(value: Any, tp: Any) -> bool:
    """Does a JSON value fit a field's annotation? (lists stand for tuples; ints for floats.)"""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in args)
    if tp is type(None):
        return value is None
    if origin is Literal:
        return value in args
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if tp is Path:
        return isinstance(value, (str, Path))
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_type_ok(v, args[0]) for v in value)
        return len(value) == len(args) and all(_type_ok(v, a) for v, a in zip(value, args))
    if origin is dict:
        return isinstance(value, dict) and all(isinstance(k, str) and _type_ok(v, args[1]) for k, v in value.items())
    if dataclasses.is_dataclass(tp):
        return isinstance(value, dict)
    return True


def _describe(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is tuple:
        plural = {str: "strings", int: "integers", float: "numbers"}.get(args[0], "values")
        return f"a list of {plural}" if len(args) == 2 and args[1] is Ellipsis else f"a list of {len(args)} {plural}"
    if origin is dict:
        return "an object"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string", type(None): "null", Path: "a path"}
    return names.get(tp, "an object")


def json_type(value: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list", dict: "an object"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def json_fields(cls: type, raw: Any, where: str, src: str, error: type[Exception] = InputError) -> dict[str, Any]:
    """The keys of one JSON object for ``cls``: unknown, missing and mistyped keys are errors
    naming the file, the field, the expected type and what was found."""
    if not isinstance(raw, dict):
        raise error(f"{src}: {where} must be an object, got {json_type(raw)}")
    known = {f.name for f in dataclasses.fields(cls)} - {"source"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise error(f"{src}: unknown key(s) in {where}: {', '.join(unknown)}")
    required = {f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING} - {"source"}
    missing = sorted(required - set(raw))
    if missing:
        raise error(f"{src}: missing key(s) in {where}: {', '.join(missing)}")
    hints = typing.get_type_hints(cls)
    prefix = "" if where.startswith("the ") else f"{where}."
    for key, value in raw.items():
        if not _type_ok(value, hints[key]):
            shown = json.dumps(value)[:40]
            raise error(f"{src}: {prefix}{key}: expected {_describe(hints[key])}, got {json_type(value)} ({shown})")
    return dict(raw)
