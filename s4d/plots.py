"""Every figure S4D draws (matplotlib, Agg backend, PNG): confusion matrix and per-class recall
(eval, train, cv, analyze scores), expert activation per MoAE layer, the task relevance heatmap, attention over frames,
and ``s4d predict``'s timeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from preprocess.safe_io import refuse_symlink


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# No figure grows with the class count: above MAX_CLASSES classes a confusion figure shows the
# TOP_CONFUSED classes with the most off-diagonal counts and the recall figure the TOP_CONFUSED
# lowest recalls, both saying so in their title; any figure is saved at a resolution that keeps
# it under MAX_PIXELS and MAX_SIDE pixels (the dpi is lowered, never the content).
MAX_CLASSES = 50
TOP_CONFUSED = 30
MAX_PIXELS = 4_000_000
MAX_SIDE = 4000


def _bounded_dpi(fig, dpi: float) -> float:
    """``dpi``, lowered so the saved figure stays under ``MAX_PIXELS`` and ``MAX_SIDE``."""
    w, h = fig.get_size_inches()
    scale = min(1.0, (MAX_PIXELS / max(w * h * dpi * dpi, 1e-9)) ** 0.5, MAX_SIDE / max(w * dpi, h * dpi, 1e-9))
    return dpi * scale


def _inches(n: int, per: float = 0.6, base: float = 1.0, cap: float = 30.0) -> float:
    return min(base + per * n, cap)


def _save(fig, path: Path, dpi: float = 120) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(refuse_symlink(path), dpi=_bounded_dpi(fig, dpi))
    _pyplot().close(fig)
    return path


def most_confused(cm: np.ndarray, k: int = TOP_CONFUSED) -> np.ndarray:
    """Indices (ascending) of the ``k`` classes with the most off-diagonal counts, as true or
    as predicted class; ties go to the lower index."""
    off = cm - np.diag(np.diag(cm))
    errors = off.sum(axis=0) + off.sum(axis=1)
    return np.sort(np.argsort(-errors, kind="stable")[:k])


def plot_confusion(path: Path, cm: np.ndarray, classes: tuple[str, ...], title: str) -> Path:
    """Row-normalised confusion matrix (true x predicted) with the share in each cell; above
    ``MAX_CLASSES`` classes only the ``TOP_CONFUSED`` most-confused ones (rows still normalised
    by all their samples), labelled as such in the title."""
    plt = _pyplot()
    cm = np.asarray(cm)
    rows = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    if len(classes) > MAX_CLASSES:
        keep = most_confused(cm)
        rows, classes = rows[np.ix_(keep, keep)], tuple(classes[i] for i in keep)
        title = f"{title}\n{len(keep)} most-confused of {len(cm)} classes (by off-diagonal count)"
    n = len(classes)
    fig, ax = plt.subplots(figsize=(_inches(n), _inches(n)))
    ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), classes, rotation=45, ha="right")
    ax.set_yticks(range(n), classes)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{rows[i, j]:.2f}", ha="center", va="center", fontsize=7, color="white" if rows[i, j] > 0.6 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


def _number(v) -> float:
    """A recall or UAR as a float; None (``null`` in summary.json: no samples) is NaN."""
    return float("nan") if v is None else float(v)


def plot_recall(path: Path, recall: dict[str, float | None], uar: float | None, title: str) -> Path:
    """Per-class recall bars with the UAR (their mean) as a line; a class without samples
    (None/NaN) has no bar. Above ``MAX_CLASSES`` classes, the ``TOP_CONFUSED`` lowest recalls."""
    plt = _pyplot()
    values = {c: _number(v) for c, v in recall.items()}
    uar = _number(uar)
    names = list(values)
    if len(names) > MAX_CLASSES:
        scored = [c for c in names if np.isfinite(values[c])]
        names = sorted(scored, key=lambda c: values[c])[:TOP_CONFUSED]
        title = f"{title}\n{len(names)} lowest recalls of {len(values)} classes"
    fig, ax = plt.subplots(figsize=(_inches(len(names), base=1.5), 3.2))
    ax.bar(range(len(names)), [100 * values[c] if np.isfinite(values[c]) else 0.0 for c in names], color="tab:blue")
    if np.isfinite(uar):
        ax.axhline(100 * uar, color="tab:red", ls="--", lw=1, label=f"UAR {100 * uar:.1f}")
        ax.legend(fontsize=8)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_ylim(0, 100)
    ax.set_ylabel("recall (%)")
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
    fig, ax = plt.subplots(figsize=(_inches(len(cols), 0.7, 2.8), _inches(len(rows), 0.6, 1.6)))
    im = ax.imshow(sim, cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto")
    ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    for i in range(len(rows) if len(rows) * len(cols) <= MAX_CLASSES * MAX_CLASSES else 0):  # numbers only while readable
        for j in range(len(cols)):
            ax.text(j, i, f"{sim[i, j]:.2f}", ha="center", va="center", fontsize=7)
    ax.set_xlabel("still-image classes (SFER)")
    ax.set_ylabel("video classes (DFER)")
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


def plot_attention(path: Path, frames_THWC: np.ndarray, rows: list[tuple[str, np.ndarray]], title: str) -> Path:
    """The paper's Fig. 6: one row per model (``rows``: label, map (T', h, w)), one column per
    frame of ``frames_THWC`` (T' uint8 frames), the map bilinearly upsampled over the frame;
    values under 2% of the row's maximum are transparent, each row scaled to its own maximum."""
    import cv2

    plt = _pyplot()
    cols = len(frames_THWC)
    fig, axes = plt.subplots(len(rows), cols, figsize=(_inches(cols, 1.3, 0.3), 1.4 * len(rows) + 0.4), squeeze=False)
    H, W = frames_THWC.shape[1:3]
    for r, (label, maps) in enumerate(rows):
        top = float(maps.max()) or 1.0
        for t in range(cols):
            ax = axes[r][t]
            ax.imshow(frames_THWC[t])
            smooth = cv2.resize(maps[min(t, len(maps) - 1)].astype(np.float32), (W, H), interpolation=cv2.INTER_LINEAR)
            ax.imshow(np.ma.masked_less_equal(smooth, 0.02 * top), cmap="jet", alpha=0.5, vmin=0.0, vmax=top)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r][0].set_ylabel(label, fontsize=8)
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def plot_scores(out: Path, confusion: list[list[int]], recall: dict[str, float], uar: float, title: str) -> list[Path]:
    """``confusion.png`` and ``recall.png`` of one evaluation, in ``out``."""
    classes = tuple(recall)
    return [
        plot_confusion(Path(out) / "confusion.png", np.asarray(confusion), classes, title),
        plot_recall(Path(out) / "recall.png", recall, uar, title),
    ]


def _smooth(values_NC: np.ndarray, width: int = 3) -> np.ndarray:
    """Moving mean over ``width`` neighbouring windows (shorter at the ends): the display only."""
    if len(values_NC) < 2:
        return values_NC
    kernel = np.ones(min(width, len(values_NC)))
    counts = np.convolve(np.ones(len(values_NC)), kernel, mode="same")
    return np.stack([np.convolve(v, kernel, mode="same") / counts for v in values_NC.T], axis=1)


def _people(result: dict) -> list[tuple[str, list[dict], list[list[float]]]]:
    """(label, windows, no-face stretches) per person: the tracks of ``--faces all``, else the main face."""
    if "tracks" in result:
        return [(f"face {t['track']}", t["windows"], t["no_face_segments"]) for t in result["tracks"]]
    return [("", result["windows"], result.get("no_face_segments", []))]


def plot_timeline(result: dict, path: str | Path, title: str | None = None, parts: list[tuple[str, float, float]] | None = None) -> Path:
    """``s4d predict``'s timeline, one row per person: a ribbon of the top class over time (its
    colour; the stronger, the more opaque), the per-class probabilities beneath, stacked and
    smoothed over 3 windows for reading (the raw per-window numbers stay in the JSON/CSV), and
    "no face" stretches greyed. ``parts`` (label, start s, end s) are marked along the top, e.g.
    the known truth of a test video. A still image gets bars, per face."""
    from matplotlib.patches import Patch

    plt = _pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    classes = result["classes"]
    colour = {c: f"C{i}" for i, c in enumerate(classes)}
    pred = result["prediction"]
    heading = title or (
        f"{Path(result['input']).name}: {pred['class']} ({pred['probability']:.2f})" if pred else f"{Path(result['input']).name}: no face"
    )
    if result["kind"] != "video":
        return _plot_answers(plt, result, path, heading, colour)
    people = _people(result)
    end = max((r["end_s"] for r in result["windows"]), default=1.0) or 1.0
    fig, axes = plt.subplots(
        2 * len(people), 1, figsize=(8, 1.0 + 2.1 * len(people)), sharex=True, squeeze=False, gridspec_kw={"height_ratios": [1, 3] * len(people)}
    )
    for p, (label, rows, gaps) in enumerate(people):
        ribbon, area = axes[2 * p, 0], axes[2 * p + 1, 0]
        face = [r for r in rows if r["face"]]
        centres = [(r["start_s"] + r["end_s"]) / 2 for r in face]
        for k, r in enumerate(face):  # each window owns the time up to the midpoints with its neighbours
            lo = (centres[k - 1] + centres[k]) / 2 if k else r["start_s"]
            hi = (centres[k] + centres[k + 1]) / 2 if k + 1 < len(face) else r["end_s"]
            ribbon.axvspan(lo, hi, color=colour[r["top"]], alpha=0.3 + 0.7 * r["probs"][r["top"]], lw=0)
        if face:
            probs = _smooth(np.array([[r["probs"][c] for c in classes] for r in face]))
            area.stackplot(centres, probs.T, colors=[colour[c] for c in classes], alpha=0.85)
        for ax in (ribbon, area):
            for s, e in gaps:
                ax.axvspan(s, e, color="0.85", zorder=3, lw=0)
        ribbon.set_yticks([])
        ribbon.set_ylabel(f"{label}\ntop" if label else "top", rotation=0, ha="right", va="center", fontsize=8)
        area.set_ylim(0, 1)
        area.set_ylabel("probability", fontsize=8)
    for k, (label, s, e) in enumerate(parts or []):
        top = axes[0, 0]
        top.text((s + e) / 2, 1.15, label, ha="center", va="bottom", fontsize=7, transform=top.get_xaxis_transform())
        if k:
            for ax in axes[:, 0]:
                ax.axvline(s, color="0.3", lw=0.8, ls=":", zorder=4)
    axes[-1, 0].set_xlim(0, end)
    axes[-1, 0].set_xlabel("time (s)")
    handles = [Patch(color=colour[c], label=c) for c in classes] + [Patch(color="0.85", label="no face")]
    axes[1, 0].legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    axes[0, 0].set_title(heading, fontsize=10, pad=18 if parts else 6)
    fig.tight_layout()
    fig.savefig(refuse_symlink(path), dpi=_bounded_dpi(fig, 110))
    plt.close(fig)
    return path


def _plot_answers(plt, result: dict, path: Path, heading: str, colour: dict[str, str]) -> Path:
    """Bars of a still image's answer, one group per face (largest first)."""
    classes = result["classes"]
    faces = [r for r in result["windows"] if r.get("face") and "probs" in r]
    fig, ax = plt.subplots(figsize=(max(6, 0.4 * len(classes) * max(len(faces), 1)), 3.2))
    width = 0.8 / max(len(faces), 1)
    for k, r in enumerate(faces):
        xs = np.arange(len(classes)) + (k - (len(faces) - 1) / 2) * width
        ax.bar(
            xs,
            [r["probs"][c] for c in classes],
            width,
            color=[colour[c] for c in classes],
            alpha=1.0 - 0.6 * k / max(len(faces), 1),
            edgecolor="0.2",
            lw=0.3,
            label=f"face {r.get('track', k)}",
        )
    ax.set_xticks(range(len(classes)), classes, rotation=30, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("probability")
    if len(faces) > 1:
        ax.legend(fontsize=7)
    ax.set_title(heading, fontsize=10)
    fig.tight_layout()
    fig.savefig(refuse_symlink(path), dpi=_bounded_dpi(fig, 110))
    plt.close(fig)
    return path
