"""``report.md``: the report table of ``report.table`` as Markdown, with the recipe's note, the
paper's stated shape of a sweep and what the flags mean."""

from __future__ import annotations

from typing import Any

from .registry import Recipe

COSTS = (
    ("tflops", "TFLOPs ours / paper", ".3g"),
    ("params_test_m", "params test M ours / paper", ".1f"),
    ("params_train_m", "params train M ours / paper", ".1f"),
)


def _pm(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "-"
    return f"{mean:.2f}" + (f" ± {std:.2f}" if std is not None else "")


def _num(v: float | None, fmt: str = ".2f") -> str:
    return "-" if v is None else format(v, fmt)


def _cost(ours: float | None, paper: float | None, fmt: str) -> str:
    if ours is None and paper is None:
        return ""
    return f"{_num(ours, fmt)} / {_num(paper, fmt)}"


def render(recipe: Recipe, rows: list[dict[str, Any]]) -> str:
    """The Markdown text of the report."""
    head = ["row", "dataset", "protocol", "seeds", "UAR (ours)", "UAR (paper)", "Δ UAR", "WAR (ours)", "WAR (paper)", "Δ WAR", "flags"]
    costs = [c for c in COSTS if any(r[c[0]] is not None or r[f"paper_{c[0]}"] is not None for r in rows)]
    head += [label for _, label, _ in costs]
    lines = [f"# {recipe.title}", "", recipe.note, ""]
    if recipe.sweep:
        lines += [f"Sweep over {recipe.sweep.get('axis', 'x')}; the paper: {recipe.sweep.get('paper_shape', 'values not printed')}.", ""]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        flags = []
        for m in ("uar", "war"):
            if r[f"in_noise_{m}"]:
                flags.append(f"{m.upper()} order vs {r[f'in_noise_{m}'].replace(';', ', ')} inside seed spread")
            if r[f"reversed_{m}"]:
                flags.append(f"{m.upper()} reversed vs {r[f'reversed_{m}'].replace(';', ', ')}")
        cells = [r["row"] if r["label"] == r["row"] else f"{r['row']} ({r['label']})", r["dataset"], r["protocol"] or "-", str(r["seeds"])]
        for m in ("uar", "war"):
            cells += [_pm(r[f"{m}_mean"], r[f"{m}_std"]), _num(r[f"paper_{m}"]), _num(r[f"diff_{m}"], "+.2f")]
        cells.append("; ".join(flags) or "")
        cells += [_cost(r[k], r[f"paper_{k}"], fmt) for k, _, fmt in costs]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "UAR/WAR in %, mean ± sample std over seeds; Δ = ours − paper. Protocol: last = the last epoch; "
        "val-selected / test-selected = the epoch chosen on a held-out share of the training fold / on the test set (as the authors).",
        "Flags, per metric, against rows with a paper value on the same dataset: 'inside seed spread' when |paper gap| < "
        "std_a + std_b (the paper's ordering cannot be told from these seeds' noise; needs two seeds or more); "
        "'reversed' when our means order the two rows the other way round.",
        "",
    ]
    return "\n".join(lines)
