"""Assembling ``s4d predict``'s result: rows per window, one person's track, the answer (the mean
of the window probabilities)."""

from __future__ import annotations

from typing import Any

import numpy as np

from preprocess.faces import Face

from .outputs import no_face_segments


def answer(probs: np.ndarray, names: tuple[str, ...]) -> dict[str, Any] | None:
    """The mean over the windows (or faces) with a face, or None without any."""
    if not len(probs):
        return None
    mean = probs.mean(axis=0)
    best = int(mean.argmax())
    return {"class": names[best], "probability": float(mean[best]), "probs": {c: float(p) for c, p in zip(names, mean)}, "windows_used": len(probs)}


def window_rows(windows: list[np.ndarray], window_faces: list, probs: np.ndarray, names: tuple[str, ...], fps: float) -> list[dict[str, Any]]:
    """One row per window: frames, seconds, face or not, and for a face its probabilities."""
    rows, k = [], 0
    for idx, faces in zip(windows, window_faces):
        row: dict[str, Any] = {
            "start_frame": int(idx[0]),
            "end_frame": int(idx[-1]),
            "start_s": round(float(idx[0]) / fps, 3),
            "end_s": round(float(idx[-1] + 1) / fps, 3),
            "face": faces is not None,
        }
        if faces is not None:
            row["probs"] = {c: float(p) for c, p in zip(names, probs[k])}
            row["top"] = names[int(probs[k].argmax())]
            k += 1
        rows.append(row)
    return rows


def track_result(
    p: int, tracked: list[Face | None], probs: np.ndarray, rows: list[dict[str, Any]], names: tuple[str, ...], n: int, fps: float
) -> dict[str, Any]:
    """One person's part of an all-faces result: where it was seen, its windows, its "no face"
    stretches and its answer."""
    seen = [t for t, f in enumerate(tracked) if f is not None]
    return {
        "track": p,
        "frames_with_face": len(seen),
        "first_frame": seen[0] if seen else None,
        "last_frame": seen[-1] if seen else None,
        "first_box": [round(v, 1) for v in tracked[seen[0]].box] if seen else None,
        "prediction": answer(probs, names),
        "windows": rows,
        "no_face_segments": no_face_segments(rows, n, fps),
    }
