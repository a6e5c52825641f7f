"""The layout rules of docs/architecture.md, checked on the source: imports point one way
(``preprocess`` <- ``pipelines`` <- ``s4d``; inside ``s4d`` from the models up to the CLI), and
no source file grows past ~300 lines without a reason written in it."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("preprocess", "pipelines", "s4d")

# Lowest first. A module may import its own package (the first two name parts) and any package
# of a lower layer; nothing above it.
LAYERS = [
    ["preprocess"],
    ["pipelines"],
    ["s4d"],  # the package's __init__: the version and lazily imported public names only
    ["s4d.models", "s4d.plots"],
    ["s4d.checkpoint"],
    ["s4d.runtime"],
    ["s4d.eval"],
    ["s4d.train", "s4d.infer"],
    ["s4d.analysis"],
    ["s4d.demo"],
    ["s4d.doctor"],
    ["s4d.recipes"],  # runs commands and reads their summaries: above every command
    ["s4d.cli"],
    ["s4d.__main__"],
]
MAX_LINES = 330  # ruff format puts a long call one argument per line: ~300 dense lines became ~330
REASON = "# Long file:"


def _unit(module: str) -> str:
    """The layer unit of a dotted module name: ``preprocess``, ``pipelines`` or ``s4d.<package>``."""
    parts = module.split(".")
    if parts[0] != "s4d" or len(parts) == 1:
        return parts[0]
    unit = ".".join(parts[:2])
    if not any(unit in layer for layer in LAYERS):
        raise AssertionError(f"{module}: {unit} has no layer in LAYERS (tests/test_layout.py): give it one")
    return unit


def _layer(unit: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if unit in layer)


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) of every import in the file, including those inside functions."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((node.lineno, target))
    return [(line, t) for line, t in found if t.split(".")[0] in PACKAGES]


def _sources() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def test_imports_point_one_way():
    wrong = []
    for path in _sources():
        unit = _unit(_module_name(path))
        for line, target in _imports(path):
            other = _unit(target)
            if other != unit and _layer(other) >= _layer(unit):
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {target} ({other} is not below {unit})")
    assert not wrong, "\n".join(wrong)


def test_the_layer_check_sees_a_back_import(tmp_path):
    """The rule can fail: a relative import from the models up into training is caught."""
    src = ROOT / "s4d" / "models" / "vit.py"
    assert _unit(_module_name(src)) == "s4d.models"
    tree = ast.parse("from ..train.loop import train_epoch\n")
    node = tree.body[0]
    assert isinstance(node, ast.ImportFrom) and node.level == 2
    base = _module_name(src).rpartition(".")[0].split(".")
    target = ".".join(base[: len(base) - node.level + 1] + [node.module])
    assert target == "s4d.train.loop" and _layer(_unit(target)) > _layer("s4d.models")


def test_long_files_say_why():
    long = [
        f"{p.relative_to(ROOT)}: {n} lines" for p in _sources() if (n := len(p.read_text().splitlines())) > MAX_LINES and REASON not in p.read_text()
    ]
    assert not long, "over ~300 lines without a '# Long file:' reason: " + "; ".join(long)
