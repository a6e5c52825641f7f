"""``s4d report runs/<recipe>``: the user's numbers beside the paper's. One line per row: UAR
and WAR in % as mean ± std over the seeds found (each seed's ``summary.json``; the selection
protocol labelled: the last epoch, or the ``selected`` block of a val- or test-selected run),
the paper's value for the row's dataset, the difference, the cost beside the paper's where the
run's summary has a ``cost`` block, and two flags per metric against every other row that has
a paper value on the same dataset:

- ``in_noise``: the paper's gap between the two rows is smaller than the user's seed spread,
  ``|P_a - P_b| < s_a + s_b`` with ``s`` the sample standard deviation (ddof 1) over the seeds:
  with these seeds, the paper's ordering of the two rows cannot be told from noise. Rows with
  fewer than two seeds have no spread and are never flagged.
- ``reversed``: the user's means order the two rows the other way round from the paper.

Writes ``report.csv``, ``report.md`` and ``report.png`` (``figure.py``) into the folder."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from preprocess import safe_json
from preprocess.errors import InputError
from preprocess.safe_io import open_new

from .registry import Recipe, Row, get_recipe
from .runner import read_record

METRICS = ("uar", "war")
COLUMNS = [
    "recipe", "row", "label", "x", "dataset", "protocol", "seeds",
    "uar_mean", "uar_std", "paper_uar", "diff_uar", "war_mean", "war_std", "paper_war", "diff_war",
    "in_noise_uar", "in_noise_war", "reversed_uar", "reversed_war",
    "tflops", "paper_tflops", "params_test_m", "paper_params_test_m", "params_train_m", "paper_params_train_m",
]  # fmt: skip


@dataclass
class Line:
    """One row of the report: the seeds' values (%), their protocol and cost, and the paper's."""

    row: Row
    dataset: str
    values: dict[str, list[float]] = field(default_factory=lambda: {m: [] for m in METRICS})
    protocols: set[str] = field(default_factory=set)
    cost: dict[str, list[float]] = field(default_factory=dict)

    def mean(self, m: str) -> float | None:
        v = self.values[m]
        return sum(v) / len(v) if v else None

    def std(self, m: str) -> float | None:
        v = self.values[m]
        if len(v) < 2:
            return None
        mu = sum(v) / len(v)
        return math.sqrt(sum((x - mu) ** 2 for x in v) / (len(v) - 1))

    def paper(self, m: str) -> float | None:
        return self.row.paper.get(self.dataset, {}).get(m)


def seed_scores(summary: dict[str, Any]) -> tuple[str, float, float]:
    """(protocol, UAR %, WAR %) of one run's ``summary.json``: its ``selected`` block when the
    run selected on val or test (and that block holds scores), else the top level (last epoch)."""
    sel = summary.get("selected") or {}
    mode = summary.get("select", "last")
    if mode in ("val", "test") and isinstance(sel.get("uar"), (int, float)):
        return ("test-selected" if mode == "test" else "val-selected"), 100 * sel["uar"], 100 * sel["war"]
    if not isinstance(summary.get("uar"), (int, float)) or not isinstance(summary.get("war"), (int, float)):
        raise InputError("summary.json has no uar/war (a fold without test data?)")
    return "last", 100 * summary["uar"], 100 * summary["war"]


def _cost(summary: dict[str, Any]) -> dict[str, float]:
    """TFLOPs and parameters (in M) of a summary's ``cost`` block, if any."""
    c = summary.get("cost") or {}
    out = {"tflops": c.get("tflops")}
    for k in ("params_test", "params_train"):
        v = c.get(k)
        out[k] = v / 1e6 if isinstance(v, (int, float)) and v > 1e4 else v  # counts -> M
    return {k: float(v) for k, v in out.items() if isinstance(v, (int, float))}


def collect(folder: Path, recipe: Recipe, dataset: str | None = None) -> list[Line]:
    """A ``Line`` per recipe row from ``<folder>/<row>/seed_*/summary.json`` (pre-training cost
    from ``pretrain_seed_*/summary.json`` when the recipe's cost is the pre-training's)."""
    record = read_record(folder)
    lines = []
    for row in recipe.rows:
        line = Line(row, row.dataset or dataset or record.get("manifest") or "dfew")
        for path in sorted((folder / row.name).glob("seed_*/summary.json")):
            summary = safe_json.read_json(path, "a run's summary")
            try:
                protocol, uar, war = seed_scores(summary)
            except InputError as err:
                raise InputError(f"{path}: {err}") from None
            line.protocols.add(protocol)
            line.values["uar"].append(uar)
            line.values["war"].append(war)
            cost = _cost(summary)
            if recipe.cost_from == "pretrain":
                pre = path.parent.parent / path.parent.name.replace("seed_", "pretrain_seed_") / "summary.json"
                pre_cost = _cost(safe_json.read_json(pre, "a pre-training's summary")) if pre.is_file() else {}
                cost["tflops"] = pre_cost.get("tflops", 0.0 if not row.pretrains else math.nan)
            for k, v in cost.items():
                line.cost.setdefault(k, []).append(v)
        lines.append(line)
    if not any(line.values["uar"] for line in lines):
        raise InputError(f"{folder}: no <row>/seed_*/summary.json of recipe {recipe.name} found; run 's4d recipe run {recipe.name}' first")
    return lines


def order_flags(lines: list[Line], m: str) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Per row name, the other rows whose paper ordering is inside the seed spread
    (``in_noise``) and those the user's means order the other way (``reversed``)."""
    noise: dict[str, list[str]] = {ln.row.name: [] for ln in lines}
    rev: dict[str, list[str]] = {ln.row.name: [] for ln in lines}
    for i, a in enumerate(lines):
        for b in lines[i + 1 :]:
            pa, pb, ma, mb = a.paper(m), b.paper(m), a.mean(m), b.mean(m)
            if a.dataset != b.dataset or None in (pa, pb, ma, mb) or pa == pb:
                continue
            sa, sb = a.std(m), b.std(m)
            if sa is not None and sb is not None and abs(pa - pb) < sa + sb:
                noise[a.row.name].append(b.row.name)
                noise[b.row.name].append(a.row.name)
            if (pa - pb) * (ma - mb) < 0:
                rev[a.row.name].append(b.row.name)
                rev[b.row.name].append(a.row.name)
    return noise, rev


def table(recipe: Recipe, lines: list[Line]) -> list[dict[str, Any]]:
    """The report's rows as dicts over ``COLUMNS`` (None where there is no value)."""
    flags = {m: order_flags(lines, m) for m in METRICS}
    out = []
    for ln in lines:
        r: dict[str, Any] = {"recipe": recipe.name, "row": ln.row.name, "label": ln.row.label, "x": ln.row.x, "dataset": ln.dataset}
        r["protocol"] = "/".join(sorted(ln.protocols)) or None
        r["seeds"] = len(ln.values["uar"])
        for m in METRICS:
            mu, p = ln.mean(m), ln.paper(m)
            r[f"{m}_mean"], r[f"{m}_std"], r[f"paper_{m}"] = mu, ln.std(m), p
            r[f"diff_{m}"] = mu - p if mu is not None and p is not None else None
            r[f"in_noise_{m}"] = ";".join(flags[m][0][ln.row.name]) or None
            r[f"reversed_{m}"] = ";".join(flags[m][1][ln.row.name]) or None
        r["tflops"] = _avg(ln.cost.get("tflops"))
        r["paper_tflops"] = ln.row.paper_cost.get("tflops")
        for k in ("params_test", "params_train"):
            r[f"{k}_m"], r[f"paper_{k}_m"] = _avg(ln.cost.get(k)), ln.row.paper_cost.get(k)
        out.append(r)
    return out


def _avg(v: list[float] | None) -> float | None:
    v = [x for x in v or [] if not math.isnan(x)]
    return sum(v) / len(v) if v else None


def write_report(folder: Path, recipe_name: str | None = None, dataset: str | None = None) -> dict[str, Path]:
    """``report.csv``, ``report.md`` and ``report.png`` for the recipe run in ``folder``; the
    recipe is ``recipe_name``, else the one ``recipe.json`` names, else the folder's name."""
    from .figure import plot_report
    from .markdown import render

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder (give runs/<recipe>)")
    recipe = get_recipe(recipe_name or read_record(folder).get("recipe") or folder.name)
    rows = table(recipe, collect(folder, recipe, dataset))
    paths = {"csv": folder / "report.csv", "md": folder / "report.md", "png": folder / "report.png"}
    for p in paths.values():
        p.unlink(missing_ok=True)  # our own outputs of an earlier report: replaced
    with open_new(paths["csv"], "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows({k: ("" if v is None else v) for k, v in r.items()} for r in rows)
    with open_new(paths["md"], "w") as f:
        f.write(render(recipe, rows))
    plot_report(paths["png"], recipe, rows)
    return paths
