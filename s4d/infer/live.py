"""Live prediction: frames in, one result per window the moment the window's last frame is in.

``Predictor.stream(frames, fps)`` returns a ``LiveStream``; ``s4d predict --live SOURCE``
prints it as JSON lines. Faces are found ``DETECT_BATCH`` frames at a time
and linked online into one track per person (``tracking.PeopleTracker``); a window of
``frames`` at the training stride closes every ``hop`` frames and is classified for every
person with detections in at least ``min_face_fraction`` of its span (``--faces all``), or for
the person with the most face evidence so far (``main``). Memory is bounded: the frames of one
window span plus one detection batch, and per track only the detections of the open window.
Latency (``latency_ms`` in every line) is the wall time from the arrival of a window's last
frame to its result: at most one detection batch of waiting plus detection, alignment and the
model.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any, Iterable, Iterator

import numpy as np

from preprocess.faces import fill_nearest

from .faces import to_tensor
from .results import answer
from .tracking import PeopleTracker, appearance

DETECT_BATCH = 4  # frames per MTCNN call: latency vs throughput


class LiveStream:
    """Iterate for ``{"window": k, "start_s", "end_s", "track", "face", "top", "probs",
    "latency_ms"}`` per closed window and person; ``summary()`` at any point (the end of the
    frames, or Ctrl-C) gives per track the mean over its face windows so far."""

    def __init__(self, predictor, frames: Iterable[np.ndarray], fps: float) -> None:
        self.frames = frames
        self.state = _State(predictor, fps)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for frame in self.frames:
            yield from self.state.push(frame, time.perf_counter())
        yield from self.state.flush()

    def summary(self) -> dict[str, Any]:
        return self.state.summary()


class _State:
    def __init__(self, predictor, fps: float) -> None:
        self.p = predictor
        self.fps = fps if fps > 0 else 25.0
        self.task = predictor.video_task
        self.names = predictor.names(self.task)
        self.stride = predictor.stride_for(self.fps)
        self.span = (predictor.frames - 1) * self.stride + 1
        self.hop = predictor.cfg.hop or max(1, predictor.frames * self.stride // 2)
        self.buffer: deque[tuple[int, np.ndarray, float]] = deque(maxlen=self.span + DETECT_BATCH)
        self.pending: list[tuple[int, np.ndarray, float]] = []  # frames waiting for detection
        self.tracker = PeopleTracker(max(1, round(predictor.cfg.max_gap_s * self.fps)))
        self.evidence: dict[int, float] = {}
        self.results: dict[int, list[np.ndarray]] = {}
        self.detected = -1  # last frame index with detections done
        self.t = 0
        self.start = 0  # next window's first frame
        self.window = 0

    def push(self, frame: np.ndarray, arrived: float) -> Iterator[dict[str, Any]]:
        item = (self.t, frame, arrived)
        self.t += 1
        self.buffer.append(item)
        self.pending.append(item)
        if len(self.pending) >= DETECT_BATCH:
            self._detect()
            yield from self._close_windows()

    def flush(self) -> Iterator[dict[str, Any]]:
        if self.pending:
            self._detect()
            yield from self._close_windows()

    def _detect(self) -> None:
        batch, self.pending = self.pending, []
        if self.p.align_faces:
            found = self.p.detector.detect_all(np.stack([f for _, f, _ in batch]))
        else:  # already face crops: the whole frame is one person's face
            found = [[] for _ in batch]
        for (t, frame, _), faces in zip(batch, found):
            owners = self.tracker.update(t, faces, [appearance(frame, f.box) for f in faces])
            for k, face in zip(owners, faces):
                self.evidence[k] = self.evidence.get(k, 0.0) + face.side * face.prob
            self.detected = t

    def _close_windows(self) -> Iterator[dict[str, Any]]:
        while self.start + self.span - 1 <= self.detected:
            k, self.window = self.window, self.window + 1  # counted before its lines go out (Ctrl-C may stop them)
            yield from self._classify(self.start, k)
            self.start += self.hop
            for track in self.tracker.tracks:  # keep only what the next window can need
                for t in [t for t in track.faces if t < self.start and t != track.last]:
                    del track.faces[t]

    def _classify(self, lo: int, window: int) -> Iterator[dict[str, Any]]:
        hi = lo + self.span - 1
        frames = {t: (f, a) for t, f, a in self.buffer}
        idx = [lo + i * self.stride for i in range(self.p.frames)]
        if not self.p.align_faces:
            people = {0: [None] * len(idx)}
        else:
            people = {}
            for k, track in enumerate(self.tracker.tracks):
                span = [track.faces.get(t) for t in range(lo, hi + 1)]
                present = sum(f is not None for f in span)
                if present and present >= self.p.cfg.min_face_fraction * len(span):
                    filled = fill_nearest(span)
                    people[k] = [filled[t - lo] for t in idx]
            if self.p.cfg.faces == "main" and people:
                main = max(people, key=lambda k: self.evidence.get(k, 0.0))
                people = {main: people[main]}
        base = {"window": window, "start_s": round(lo / self.fps, 3), "end_s": round((hi + 1) / self.fps, 3)}
        if not people:
            yield {**base, "track": None, "face": False, "latency_ms": round(1000 * (time.perf_counter() - frames[hi][1]), 1)}
            return
        batch = [to_tensor(np.stack([self.p.prep.frame(frames[t][0], face) for t, face in zip(idx, faces)])) for faces in people.values()]
        probs = self.p._probs(batch, self.task)
        latency = round(1000 * (time.perf_counter() - frames[hi][1]), 1)
        for k, row in zip(people, probs):
            self.results.setdefault(k, []).append(row)
            yield {
                **base,
                "track": k,
                "face": True,
                "top": self.names[int(row.argmax())],
                "probs": {c: round(float(v), 6) for c, v in zip(self.names, row)},
                "latency_ms": latency,
            }

    def summary(self) -> dict[str, Any]:
        return {
            "frames": self.t,
            "seconds": round(self.t / self.fps, 3),
            "windows": self.window,
            "tracks": {str(k): answer(np.stack(rows), self.names) for k, rows in sorted(self.results.items())},
        }
