"""What ``s4d predict`` writes and prints: the per-window file (JSON or CSV), the one-line
summary, and the "no face" stretches of a timeline."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

from preprocess.errors import InputError
from preprocess.safe_io import open_new, write_text


def no_face_segments(rows: list[dict[str, Any]], num_frames: int, fps: float) -> list[list[float]]:
    """[start_s, end_s] runs of frames that windows cover but no window with a face covers."""
    face = np.zeros(num_frames, bool)
    blank = np.zeros(num_frames, bool)
    for r in rows:
        (face if r["face"] else blank)[r["start_frame"] : r["end_frame"] + 1] = True
    only_blank = np.concatenate([[False], blank & ~face, [False]])
    edges = np.flatnonzero(np.diff(only_blank.astype(np.int8)))
    return [[round(float(a) / fps, 3), round(float(b) / fps, 3)] for a, b in zip(edges[::2], edges[1::2])]


def write_output(result: dict[str, Any], path: str | Path) -> Path:
    """``.json``: the whole result; ``.csv``: one row per window with a column per class."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".json":
        write_text(path, json.dumps(result, indent=2) + "\n")
    elif path.suffix.lower() == ".csv":
        tracks = "tracks" in result  # --faces all: a track column first
        with open_new(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow([*(["track"] if tracks else []), "start_s", "end_s", "face", "top", *result["classes"]])
            for r in result["windows"]:
                p = r.get("probs", {})
                w.writerow(
                    [
                        *([r.get("track", "")] if tracks else []),
                        r.get("start_s", ""),
                        r.get("end_s", ""),
                        int(r["face"]),
                        r.get("top", ""),
                        *(f"{p[c]:.6f}" if c in p else "" for c in result["classes"]),
                    ]
                )
    else:
        raise InputError(f"--out {path}: use a .json or .csv file name")
    return path


def summary_line(result: dict[str, Any]) -> str:
    """One line per input; with ``--faces all`` one more line per person."""
    line = _summary(result)
    for t in result.get("tracks", []):
        pred = t["prediction"]
        where = f"frames {t['first_frame']}-{t['last_frame']}" if t.get("first_frame") is not None else f"box {t.get('box')}"
        line += f"\n  face {t['track']} ({where}): " + (f"{pred['class']} {pred['probability']:.2f}" if pred else "no face window")
    return line


def _summary(result: dict[str, Any]) -> str:
    pred = result["prediction"]
    if result["kind"] == "image":
        return f"{result['input']}: " + (f"{pred['class']} {pred['probability']:.2f}" if pred else "no face")
    windows = [r for r in result["windows"] if r.get("track", 0) == 0]
    with_face = sum(r["face"] for r in windows)
    span = f"{result['frames'] / result['fps']:.1f} s, {len(windows)} windows, {with_face} with a face"
    if "tracks" in result:
        span += f", {len(result['tracks'])} face track(s)"
    if pred is None:
        return f"{result['input']}: no face ({span})"
    return f"{result['input']}: {pred['class']} {pred['probability']:.2f} ({span})"
