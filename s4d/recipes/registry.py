"""The paper's experiments as data: one JSON file per table or figure in ``tables/`` (a
registry in the style of torchtitan's named configs), read into typed, self-validating
``Recipe`` / ``Row`` / ``Step`` records. A row is one or two ``s4d`` commands (pre-train, then
fine-tune from it) plus the paper's values for that row (per dataset, UAR/WAR in %) and its
cost where the paper prints one; the commands themselves are built in ``commands.py``."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from preprocess.errors import InputError

TABLES = Path(__file__).resolve().parent / "tables"
COMMANDS = ("train", "pretrain")
INITS = (None, "pretrained", "videomae", "pretrain")  # where a fine-tuning step's --init comes from
SELECTS = ("last", "val", "test")
COST_KEYS = ("tflops", "params_test", "params_train")


@dataclass(frozen=True)
class Step:
    """One ``s4d`` command of a row: ``command`` with the row's own ``args``; the runner adds the
    shared ones (manifest, fold, size, seed, epochs, out, data root). ``init`` (train only):
    ``None`` from scratch, ``pretrained`` the user's dual-modal pre-training (``--pretrained``),
    ``videomae`` VideoMAE's VoxCeleb2 weights (``--init-videomae``), ``pretrain`` this row's
    own pre-training step. ``manifest`` replaces the user's manifest (Table VI's SFER-only row);
    ``fold`` False leaves ``--fold`` out (the manifest's first)."""

    command: str
    args: tuple[str, ...] = ()
    init: str | None = None
    manifest: str | None = None
    fold: bool = True

    def __post_init__(self) -> None:
        if self.command not in COMMANDS:
            raise InputError(f"step command must be one of {', '.join(COMMANDS)}, got {self.command!r}")
        if self.init not in INITS:
            raise InputError(f"step init must be one of {INITS}, got {self.init!r}")
        if self.command == "pretrain" and self.init is not None:
            raise InputError("a pretrain step takes no init")
        if not all(isinstance(a, str) for a in self.args):
            raise InputError(f"step args must be strings, got {list(self.args)!r}")


@dataclass(frozen=True)
class Row:
    """One experiment: ``steps`` (a pretrain step, if any, first), the paper's values
    ``paper[dataset] = {"uar": %, "war": %}``, its cost ``paper_cost`` (``tflops``,
    ``params_test``/``params_train`` in M), ``x`` its value on a sweep's axis, ``dataset`` the
    dataset it is scored on when not the user's manifest."""

    name: str
    label: str
    steps: tuple[Step, ...]
    paper: dict[str, dict[str, float]] = field(default_factory=dict)
    paper_cost: dict[str, float] = field(default_factory=dict)
    x: float | None = None
    dataset: str | None = None
    note: str = ""

    def __post_init__(self) -> None:
        if not self.name or any(c in self.name for c in "/\\ ") or self.name.startswith("."):
            raise InputError(f"row name {self.name!r} must be a plain folder name")
        kinds = [s.command for s in self.steps]
        if kinds.count("train") != 1 or kinds[-1] != "train" or len(kinds) > 2:
            raise InputError(f"row {self.name}: steps must be [pretrain,] train, got {kinds}")
        if any(s.init == "pretrain" for s in self.steps) != ("pretrain" in kinds):
            raise InputError(f"row {self.name}: a pretrain step and a train step with init 'pretrain' go together")
        for ds, v in self.paper.items():
            if set(v) != {"uar", "war"}:
                raise InputError(f"row {self.name}: paper[{ds}] needs exactly uar and war, got {sorted(v)}")
        if set(self.paper_cost) - set(COST_KEYS):
            raise InputError(f"row {self.name}: paper_cost keys must be among {COST_KEYS}, got {sorted(self.paper_cost)}")

    @property
    def pretrains(self) -> bool:
        return self.steps[0].command == "pretrain"


@dataclass(frozen=True)
class Recipe:
    """A paper table or figure: its ``rows``, the selection protocol its numbers use
    (``select``: last / val / test), where its cost column comes from (``cost_from``: the
    pre-training or the fine-tuning), and for a sweep (Fig. 3) the ``sweep`` axis and the
    paper's stated shape."""

    name: str
    title: str
    source: str
    rows: tuple[Row, ...]
    select: str = "last"
    cost_from: str = "train"
    note: str = ""
    sweep: dict[str, str] | None = None

    def __post_init__(self) -> None:
        if self.select not in SELECTS:
            raise InputError(f"recipe {self.name}: select must be one of {', '.join(SELECTS)}, got {self.select!r}")
        if self.cost_from not in COMMANDS:
            raise InputError(f"recipe {self.name}: cost_from must be train or pretrain, got {self.cost_from!r}")
        names = [r.name for r in self.rows]
        if not names or len(set(names)) != len(names):
            raise InputError(f"recipe {self.name}: rows must be present and uniquely named, got {names}")
        if self.sweep is not None and any(r.x is None for r in self.rows):
            raise InputError(f"recipe {self.name}: every row of a sweep needs its x")

    def row(self, name: str) -> Row:
        for r in self.rows:
            if r.name == name:
                return r
        raise InputError(f"recipe {self.name} has no row {name!r}; rows: {', '.join(r.name for r in self.rows)}")


def _read(path: Path) -> Recipe:
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        rows = tuple(
            Row(**{**r, "steps": tuple(Step(**{**s, "args": tuple(s.get("args", ()))}) for s in r["steps"])})  # type: ignore[arg-type]
            for r in data.pop("rows")
        )
        recipe = Recipe(**data, rows=rows)
    except (KeyError, TypeError, json.JSONDecodeError) as err:
        raise InputError(f"{path}: not a valid recipe ({type(err).__name__}: {err})") from None
    except InputError as err:
        raise InputError(f"{path}: {err}") from None
    if recipe.name != path.stem:
        raise InputError(f"{path}: recipe name {recipe.name!r} differs from the file name")
    return recipe


def all_recipes(folder: Path = TABLES) -> dict[str, Recipe]:
    """Every recipe in ``folder`` by name: the tables, then the figures, each in name order."""
    return {p.stem: _read(p) for p in sorted(folder.glob("*.json"), key=lambda p: (p.stem.startswith("fig"), p.stem))}


def get_recipe(name: str, folder: Path = TABLES) -> Recipe:
    recipes = all_recipes(folder)
    if name not in recipes:
        raise InputError(f"no recipe {name!r}; choose one of {', '.join(recipes)} (s4d recipe list)")
    return recipes[name]
