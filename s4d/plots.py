"""Every figure S4D draws (matplotlib, Agg backend, PNG): confusion matrix and per-class recall
(eval, train, cv, analyze scores), expert activation per MoAE layer, the task relevance heatmap,
and ``s4d predict``'s timeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    _pyplot().close(fig)
    return path


def plot_confusion(path: Path, cm: np.ndarray, classes: tuple[str, ...], title: str) -> Path:
    """Row-normalised confusion matrix (true x predicted) with the share in each cell."""
    plt = _pyplot()
    rows = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1 + 0.6 * len(classes), 1 + 0.6 * len(classes)))
    ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, f"{rows[i, j]:.2f}", ha="center", va="center", fontsize=7, color="white" if rows[i, j] > 0.6 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


def plot_recall(path: Path, recall: dict[str, float], uar: float, title: str) -> Path:
    """Per-class recall bars with the UAR (their mean) as a line."""
    plt = _pyplot()
    names = list(recall)
    fig, ax = plt.subplots(figsize=(1.5 + 0.6 * len(names), 3.2))
    ax.bar(range(len(names)), [100 * recall[c] for c in names], color="tab:blue")
    ax.axhline(100 * uar, color="tab:red", ls="--", lw=1, label=f"UAR {100 * uar:.1f}")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_ylim(0, 100)
    ax.set_ylabel("recall (%)")
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


def plot_experts(path: Path, layers: list[int], by_task: dict[str, np.ndarray], title: str) -> Path:
    """One panel per MoAE layer: mean gate weight of each expert, a bar per task (the paper's
    Fig. 5). ``by_task[task]`` is (layers, experts)."""
    plt = _pyplot()
    tasks = list(by_task)
    experts = next(iter(by_task.values())).shape[1]
    cols = min(3, len(layers))
    rows = -(-len(layers) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False, sharey=True)
    width = 0.8 / len(tasks)
    for i, block in enumerate(layers):
        ax = axes[i // cols][i % cols]
        for k, task in enumerate(tasks):
            ax.bar(np.arange(experts) + (k - (len(tasks) - 1) / 2) * width, by_task[task][i], width, label=task)
        ax.set_title(f"block {block}", fontsize=9)
        ax.set_xticks(range(experts))
        ax.set_xlabel("expert", fontsize=8)
    for j in range(len(layers), rows * cols):
        axes[j // cols][j % cols].axis("off")
    axes[0][0].set_ylabel("mean gate weight")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def plot_relevance(path: Path, sim: np.ndarray, rows: tuple[str, ...], cols: tuple[str, ...], title: str) -> Path:
    """Cosine similarity of class centres: dynamic classes (rows) x static classes (columns)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(2.8 + 0.7 * len(cols), 1.6 + 0.6 * len(rows)))
    im = ax.imshow(sim, cmap="RdBu_r", vmin=-1, vmax=1)
    ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    for i in range(len(rows)):
        for j in range(len(cols)):
            ax.text(j, i, f"{sim[i, j]:.2f}", ha="center", va="center", fontsize=7)
    ax.set_xlabel("still-image classes (SFER)")
    ax.set_ylabel("video classes (DFER)")
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


def plot_scores(out: Path, confusion: list[list[int]], recall: dict[str, float], uar: float, title: str) -> list[Path]:
    """``confusion.png`` and ``recall.png`` of one evaluation, in ``out``."""
    classes = tuple(recall)
    return [plot_confusion(Path(out) / "confusion.png", np.asarray(confusion), classes, title),
            plot_recall(Path(out) / "recall.png", recall, uar, title)]


def plot_timeline(result: dict, path: str | Path, title: str | None = None,
                  parts: list[tuple[str, float, float]] | None = None) -> Path:
    """Class probabilities over time (window centres), no-face stretches shaded grey; ``parts``
    (label, start s, end s) are marked along the top, e.g. the known truth of a test video."""
    plt = _pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = result["windows"]
    fig, ax = plt.subplots(figsize=(8, 3.2))
    if result["kind"] == "video":
        centres = [(r["start_s"] + r["end_s"]) / 2 for r in rows]
        for c in result["classes"]:
            xs = [x for x, r in zip(centres, rows) if r["face"]]
            ys = [r["probs"][c] for r in rows if r["face"]]
            ax.plot(xs, ys, marker="o", ms=3, lw=1.5, label=c)
        for s, e in result["no_face_segments"]:
            ax.axvspan(s, e, color="0.85", zorder=0, label="no face" if s == result["no_face_segments"][0][0] else None)
        for k, (label, s, e) in enumerate(parts or []):
            ax.axvspan(s, e, ymin=0.94, ymax=1.0, color=f"C{result['classes'].index(label)}" if label in result["classes"] else "0.5",
                       alpha=0.6, lw=0)
            ax.text((s + e) / 2, 1.02, label, ha="center", va="bottom", fontsize=7, transform=ax.get_xaxis_transform())
            if k:
                ax.axvline(s, color="0.6", lw=0.8, ls=":")
        ax.set_xlabel("time (s), window centres")
        end = max((r["end_s"] for r in rows), default=1.0)
        ax.set_xlim(0, end)
    else:
        probs = rows[0].get("probs", {})
        ax.bar(range(len(result["classes"])), [probs.get(c, 0.0) for c in result["classes"]])
        ax.set_xticks(range(len(result["classes"])), result["classes"], rotation=30, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("probability")
    pred = result["prediction"]
    ax.set_title(title or (f"{Path(result['input']).name}: {pred['class']} ({pred['probability']:.2f})" if pred else
                           f"{Path(result['input']).name}: no face"), fontsize=10, pad=16 if parts else 6)
    if result["kind"] == "video":
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
