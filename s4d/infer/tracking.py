"""Following the main face through a video.

Detections (every face of every frame) are linked into tracks by overlap with the track's last
box; the track with the most face evidence (sum of box side x confidence) is the main face.
Where it is absent, other tracks that do not overlap it in time fill in (a cut to another
person), again strongest first. Only real detections are returned: frames in a gap stay None,
and whoever samples them (``predict``'s windows) decides whether to borrow a neighbour.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
