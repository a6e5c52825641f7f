"""Following faces through a video: the main face (``main_face``), or every face as one track
per person (``every_face``: overlap + appearance, see ``link_people``).

Detections (every face of every frame) are linked into tracks by overlap with the track's last
box; the track with the most face evidence (sum of box side x confidence) is the main face.
Where it is absent, other tracks that do not overlap it in time fill in (a cut to another
person), again strongest first. Only real detections are returned: frames in a gap stay None,
and whoever samples them (``predict``'s windows) decides whether to borrow a neighbour.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from preprocess.faces import Face


def iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@dataclass
class Track:
    first: int  # frame index of the first detection
    faces: dict[int, Face] = field(default_factory=dict)  # frame index -> face, added in frame order
    last: int = -1

    def add(self, t: int, face: Face) -> None:
        self.faces[t] = face
        self.last = t

    @property
    def weight(self) -> float:
        return sum(f.side * f.prob for f in self.faces.values())


def link_tracks(faces_per_frame: list[list[Face]], max_gap: int, min_iou: float = 0.3) -> list[Track]:
    """Greedy frame-by-frame linking: each face joins the open track whose last box overlaps it
    most (IoU >= ``min_iou``, last seen at most ``max_gap`` frames ago), else starts a track."""
    tracks: list[Track] = []
    active: list[int] = []  # tracks seen within the last max_gap frames
    for t, faces in enumerate(faces_per_frame):
        active = [k for k in active if t - tracks[k].last <= max_gap]
        taken: set[int] = set()
        for face in sorted(faces, key=lambda f: -f.prob):
            best, best_iou = None, min_iou
            for k in active:
                track = tracks[k]
                if k in taken:
                    continue
                overlap = iou(track.faces[track.last].box, face.box)
                if overlap >= best_iou:
                    best, best_iou = k, overlap
            if best is None:
                tracks.append(Track(first=t))
                best = len(tracks) - 1
                active.append(best)
            tracks[best].add(t, face)
            taken.add(best)
    return tracks


def main_face(faces_per_frame: list[list[Face]], max_gap: int, min_detections: int = 1) -> list[Face | None]:
    """Per frame, the main face's detection or None. Tracks (linked across gaps of at most
    ``max_gap`` frames) with fewer than ``min_detections`` detections are noise (a face-like
    texture in one frame) and dropped; the rest are taken strongest first, each kept only if its
    span does not overlap an already taken track's span."""
    n = len(faces_per_frame)
    out: list[Face | None] = [None] * n
    spans = [False] * n
    for track in sorted(link_tracks(faces_per_frame, max_gap), key=lambda tr: -tr.weight):
        if len(track.faces) >= min_detections and not any(spans[track.first : track.last + 1]):
            spans[track.first : track.last + 1] = [True] * (track.last + 1 - track.first)
            for t, face in track.faces.items():
                out[t] = face
    return out


# ----------------------------------------------------------------------------- every face


def appearance(frame_HWC: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    """A face's look, for telling two people apart: a 16x16 grey thumbnail of the box (zero mean,
    unit norm: layout of the features) and a 4x4x4 colour histogram (skin, hair, light), each
    half of a unit vector compared by dot product."""
    h, w = frame_HWC.shape[:2]
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(max(x1, x0 + 1), w), min(max(y1, y0 + 1), h)
    crop = frame_HWC[y0:y1, x0:x1]
    if crop.size == 0:
        return np.zeros(16 * 16 + 64, np.float32)
    grey = cv2.resize(cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY), (16, 16), interpolation=cv2.INTER_AREA).astype(np.float32).ravel()
    grey -= grey.mean()
    hist = cv2.calcHist([crop], [0, 1, 2], None, [4, 4, 4], [0, 256] * 3).ravel().astype(np.float32)
    parts = [v / (np.linalg.norm(v) or 1.0) for v in (grey, hist)]
    return (np.concatenate(parts) / np.sqrt(2)).astype(np.float32)


@dataclass
class PersonTrack(Track):
    look: np.ndarray | None = None  # running mean of the appearance
    velocity: tuple[float, float] = (0.0, 0.0)  # box centre motion per frame

    def predicted(self, t: int) -> tuple[float, float, float, float]:
        x0, y0, x1, y1 = self.faces[self.last].box
        dx, dy = (v * (t - self.last) for v in self.velocity)
        return x0 + dx, y0 + dy, x1 + dx, y1 + dy

    def join(self, t: int, face: Face, look: np.ndarray) -> None:
        if self.faces:
            (px, py), (cx, cy) = self.faces[self.last].center, face.center
            step = max(t - self.last, 1)
            self.velocity = tuple(0.5 * v + 0.5 * d / step for v, d in zip(self.velocity, (cx - px, cy - py)))
        self.look = look if self.look is None else 0.8 * self.look + 0.2 * look
        self.add(t, face)


class PeopleTracker:
    """Online linking of every face into one track per person, a frame at a time (``link_people``
    for a whole video, ``Predictor.stream`` for a live one). A face may join an open track (seen
    at most ``max_gap`` frames ago) whose box, moved on by its velocity, overlaps it (IoU >=
    ``min_iou``) or, after a gap (an occlusion, a crossing), whose appearance matches (dot >=
    ``same_look``). Pairs are taken best first by overlap + appearance, so two faces that cross
    keep their tracks where overlap alone would swap them."""

    def __init__(self, max_gap: int, min_iou: float = 0.1, same_look: float = 0.75) -> None:
        self.max_gap, self.min_iou, self.same_look = max_gap, min_iou, same_look
        self.tracks: list[PersonTrack] = []

    def update(self, t: int, faces: list[Face], looks: list[np.ndarray]) -> list[int]:
        """Link frame ``t``'s faces; returns the track index of each face."""
        tracks = self.tracks
        active = [k for k, tr in enumerate(tracks) if t - tr.last <= self.max_gap]
        pairs = []
        for j, (face, look) in enumerate(zip(faces, looks)):
            for k in active:
                tr = tracks[k]
                overlap = iou(tr.predicted(t), face.box)
                similar = float(tr.look @ look) if tr.look is not None else 0.0
                if overlap >= self.min_iou or (t - tr.last > 1 and similar >= self.same_look):
                    pairs.append((overlap + similar, k, j))
        owner: dict[int, int] = {}
        for _, k, j in sorted(pairs, reverse=True):
            if k in owner.values() or j in owner:
                continue
            tracks[k].join(t, faces[j], looks[j])
            owner[j] = k
        for j, face in enumerate(faces):
            if j not in owner:
                track = PersonTrack(first=t)
                track.join(t, face, looks[j])
                tracks.append(track)
                owner[j] = len(tracks) - 1
        return [owner[j] for j in range(len(faces))]


def link_people(faces_per_frame: list[list[Face]], looks_per_frame: list[list[np.ndarray]], max_gap: int) -> list[PersonTrack]:
    """Every face of a whole video linked into one track per person (``PeopleTracker``)."""
    tracker = PeopleTracker(max_gap)
    for t, (faces, looks) in enumerate(zip(faces_per_frame, looks_per_frame)):
        tracker.update(t, faces, looks)
    return tracker.tracks


def every_face(
    faces_per_frame: list[list[Face]], looks_per_frame: list[list[np.ndarray]], max_gap: int, min_detections: int = 1
) -> list[list[Face | None]]:
    """Per person (strongest first: most face evidence), the detection of every frame or None."""
    people = [tr for tr in link_people(faces_per_frame, looks_per_frame, max_gap) if len(tr.faces) >= min_detections]
    out = []
    for track in sorted(people, key=lambda tr: -tr.weight):
        per_frame: list[Face | None] = [None] * len(faces_per_frame)
        for t, face in track.faces.items():
            per_frame[t] = face
        out.append(per_frame)
    return out
