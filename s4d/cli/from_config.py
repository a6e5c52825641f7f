"""Command-line options built from a typed config: each field of ``TrainConfig`` /
``PretrainConfig`` (``s4d.train.config``) declares its default, help and flag once, and
``config_command`` turns them into a typer command's signature, plus ``--config FILE`` (any
option, by field or flag name; flags given on the command line win, see ``config_file``)."""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer

from preprocess.errors import InputError

from .main import one_line_errors

CONFIG_HELP = "YAML or JSON file of options (by field or flag name, e.g. top_k or top-k); options given on the command line override it."


@dataclass(frozen=True)
class OptionSpec:
    """One command-line option of a config: its parameter ``name``, the config ``field`` it sets
    (``nested``: the field inside that nested config, as ``--lr`` -> ``optim.base_lr``), the
    value type (``base``, ``optional``), the command line's ``default`` and its flags."""

    name: str
    field: str
    nested: str | None
    base: type
    optional: bool
    default: Any
    flags: tuple[str, ...]
    meta: dict[str, Any]

    @property
    def keys(self) -> set[str]:
        """The names a ``--config`` file may use: parameter, field and long flag names."""
        longs = [f.split("/")[0][2:] for f in self.flags if f.startswith("--")]
        names = {self.name, self.name.rstrip("_"), *longs, *(n.replace("-", "_") for n in longs)}
        return names | ({self.field} if self.nested is None else {f"{self.field}.{self.nested}"})

    def parameter(self) -> inspect.Parameter:
        """The typer parameter: ``Annotated[type, typer.Option(...)]`` with its default."""
        cli = {k: self.meta[k] for k in ("min", "max", "envvar", "metavar") if k in self.meta}
        kind = Path if self.meta.get("path") else self.base
        help = self.meta["help"] + (" Required (here or in --config)." if self.default is dataclasses.MISSING else "")
        annotation = Annotated[
            Optional[kind] if self.optional or self.default is dataclasses.MISSING else kind, typer.Option(*self.flags, help=help, **cli)
        ]
        default = None if self.default is dataclasses.MISSING else self.default
        return inspect.Parameter(self.name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)


def option_specs(cls: type) -> list[OptionSpec]:
    """The options of config class ``cls``, in field order (fields without ``help`` are not options)."""
    hints = typing.get_type_hints(cls)
    specs = []
    for f in dataclasses.fields(cls):
        meta = dict(f.metadata)
        if "nested" in meta:
            inner = f.default_factory()
            for name, (sub, help) in meta["nested"].items():
                value = getattr(inner, sub)
                specs.append(OptionSpec(name, f.name, sub, type(value), False, value, (f"--{name.replace('_', '-')}",), {"help": help}))
            continue
        if "help" not in meta:
            continue
        base, optional = _unwrap(hints[f.name])
        name = meta.get("cli", f.name)
        default = meta["cli_default"] if "cli_default" in meta else f.default
        flags = tuple(meta.get("flags", (f"--{name.rstrip('_').replace('_', '-')}",)))
        specs.append(OptionSpec(name, f.name, None, base, optional or default is None, default, flags, meta))
    return specs


def _unwrap(hint: Any) -> tuple[type, bool]:
    """``int | None`` -> (int, True); ``int`` -> (int, False)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0], True
    return hint, False


def config_from_options(cls: type, options: dict[str, Any], default_out: Callable[[dict[str, Any]], Path]) -> Any:
    """``cls`` from command-line values by parameter name (missing ones: the field's default);
    a path option becomes a str, a missing ``out`` is ``default_out(values)``."""
    values: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    for spec in option_specs(cls):
        if spec.name not in options:
            continue
        value = options[spec.name]
        if spec.nested is not None:
            nested.setdefault(spec.field, {})[spec.nested] = value
            continue
        if value is None and spec.default is dataclasses.MISSING and spec.field != "out":
            raise InputError(f"{spec.flags[0]} is required (on the command line or in --config)")
        values[spec.field] = str(value) if isinstance(value, Path) else value
    if values.get("out") is None:
        values["out"] = str(default_out(values))
    for name, changes in nested.items():
        values[name] = dataclasses.replace(cls.__dataclass_fields__[name].default_factory(), **changes)
    return cls(**values)


def config_command(
    cls: type, default_out: Callable[[dict[str, Any]], Path], *, without: tuple[str, ...] = (), extra: tuple[inspect.Parameter, ...] = ()
):
    """Decorate ``f(cfg, **extra)`` into a typer command whose options are ``cls``'s (less
    ``without``, which keep their defaults), ``--config`` and the ``extra`` parameters."""
    from .config_file import merge_config_file

    specs = [s for s in option_specs(cls) if s.name not in without]
    config = inspect.Parameter(
        "config", inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[Optional[Path], typer.Option("--config", help=CONFIG_HELP)], default=None
    )
    ctx = inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context)

    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        def command(ctx: typer.Context, config: Path | None = None, **values: Any) -> Any:
            extras = {p.name: values.pop(p.name) for p in extra}
            with one_line_errors():
                if config is not None:
                    values = merge_config_file(config, specs, values, given={n for n in values if _given(ctx, n)})
                cfg = config_from_options(cls, values, default_out)
            return f(cfg, **extras)

        command.__name__, command.__doc__, command.__annotations__ = f.__name__, f.__doc__, {}  # typer reads __signature__
        command.__signature__ = inspect.Signature([ctx, *(s.parameter() for s in specs), config, *extra])
        return command

    return decorate


def _given(ctx: typer.Context, name: str) -> bool:
    """Whether option ``name`` was set on the command line or by its environment variable."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT", "PROMPT")
