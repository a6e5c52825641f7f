"""Sliding windows over a video: which frames each model input takes."""

from __future__ import annotations

import numpy as np

from pipelines.sampling import clip_indices


def window_starts(num_frames: int, span: int, hop: int) -> list[int]:
    """Starts every ``hop`` frames while a whole ``span`` fits, plus one window flush with the
    end so the last frames are covered; a video shorter than ``span`` gets one window at 0."""
    if num_frames <= 0 or span <= 0 or hop <= 0:
        raise ValueError(f"num_frames, span and hop must be positive (got {num_frames}, {span}, {hop})")
    last = max(num_frames - span, 0)
    starts = list(range(0, last + 1, hop))
    if starts[-1] != last:
        starts.append(last)
    return starts


def plan_windows(num_frames: int, frames: int, stride: int, hop: int) -> list[np.ndarray]:
    """Frame indices (``frames`` each, ``stride`` apart) of every window; past the end repeats
    the last frame, as the training loader does."""
    span = (frames - 1) * stride + 1
    return [clip_indices(s, num_frames, frames, stride) for s in window_starts(num_frames, span, hop)]
