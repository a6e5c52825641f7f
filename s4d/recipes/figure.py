"""``report.png``: a sweep (Fig. 3) as UAR and WAR lines over its axis with the seeds' spread
and the paper's points overlaid where the paper gives them; a table as bars (ours, ± std) with
the paper's values as markers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .registry import Recipe


def plot_report(path: Path, recipe: Recipe, rows: list[dict[str, Any]]) -> None:
    """Draw ``rows`` (``report.table``) into ``path``, one panel per metric."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(max(8.0, 1.2 * len(rows) + 4), 3.8))
    for ax, m in zip(axes, ("uar", "war")):
        if recipe.sweep:
            _sweep(ax, rows, m, recipe.sweep.get("axis", "x"))
        else:
            _bars(ax, rows, m)
        ax.set_title(m.upper())
        ax.set_ylabel(f"{m.upper()} (%)")
        ax.grid(alpha=0.3)
    shape = f" (paper: {recipe.sweep['paper_shape']})" if recipe.sweep and recipe.sweep.get("paper_shape") else ""
    fig.suptitle(recipe.title + shape, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _sweep(ax, rows: list[dict[str, Any]], m: str, axis: str) -> None:
    for ds in sorted({r["dataset"] for r in rows}):
        pts = [r for r in rows if r["dataset"] == ds and r[f"{m}_mean"] is not None]
        if pts:
            ax.errorbar(
                [r["x"] for r in pts],
                [r[f"{m}_mean"] for r in pts],
                yerr=[r[f"{m}_std"] or 0 for r in pts],
                marker="o",
                capsize=3,
                label=f"ours ({ds})",
            )
        paper = [r for r in rows if r["dataset"] == ds and r[f"paper_{m}"] is not None]
        if paper:
            ax.plot([r["x"] for r in paper], [r[f"paper_{m}"] for r in paper], "r*", markersize=11, label=f"paper ({ds})")
    ax.set_xlabel(axis)
    ax.legend(fontsize=7)


def _bars(ax, rows: list[dict[str, Any]], m: str) -> None:
    xs = range(len(rows))
    ax.bar(xs, [r[f"{m}_mean"] or 0 for r in rows], yerr=[r[f"{m}_std"] or 0 for r in rows], capsize=3, color="tab:blue", label="ours")
    paper = [(i, r[f"paper_{m}"]) for i, r in enumerate(rows) if r[f"paper_{m}"] is not None]
    if paper:
        ax.plot([i for i, _ in paper], [v for _, v in paper], "r*", markersize=11, label="paper")
    ax.set_xticks(list(xs), [r["row"] for r in rows], rotation=30, ha="right", fontsize=8)
    ax.legend(fontsize=7)
