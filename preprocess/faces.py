"""Face detection (MTCNN from facenet-pytorch) and alignment into square crops.

Two framings (``geometry``), for whole frames and for face boxes alike:

- ``crop``: one warp does rotation, crop and resize: ``warp_square`` maps a square of side
  ``side`` centred at ``center`` and rotated by ``angle`` degrees onto a ``size`` x ``size``
  output (a whole frame: its largest centred square; a face: a square of the box's longer side).
- ``squash`` (the reference's): the whole frame, or the face box itself, is resized to
  ``size`` x ``size`` whatever its aspect; a face box is first cut out at its own resolution,
  levelled by the eye line (``warp_rect``), then resized.

Alignment levels the eye line; already face-cropped data uses the same warps with no rotation.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from .errors import InputError
from .media import MediaError

Geometry = Literal["squash", "crop"]
MIN_DETECT_SIDE = 24  # MTCNN's smallest pyramid level needs at least 12 px; keep a margin


@dataclass(frozen=True)
class Face:
    box: tuple[float, float, float, float]  # x0, y0, x1, y1
    prob: float
    landmarks: np.ndarray  # (5, 2): eye on the image's left, other eye, nose, mouth corners

    @property
    def eye_angle(self) -> float:
        """Angle of the eye line in degrees (image coordinates, y down)."""
        (lx, ly), (rx, ry) = self.landmarks[0], self.landmarks[1]
        return math.degrees(math.atan2(ry - ly, rx - lx))

    @property
    def center(self) -> tuple[float, float]:
        x0, y0, x1, y1 = self.box
        return (x0 + x1) / 2, (y0 + y1) / 2

    @property
    def side(self) -> float:
        x0, y0, x1, y1 = self.box
        return max(x1 - x0, y1 - y0)


def warp_matrix(center: tuple[float, float], side: float, angle: float, size: int) -> np.ndarray:
    """2x3 affine matrix: rotate by ``angle`` about ``center``, scale ``side`` to ``size``,
    move ``center`` to the middle of the output."""
    m = cv2.getRotationMatrix2D(center, angle, size / side)
    m[0, 2] += size / 2 - center[0]
    m[1, 2] += size / 2 - center[1]
    return m


def warp_square(frame: np.ndarray, center: tuple[float, float], side: float, angle: float, size: int) -> np.ndarray:
    """(H, W, 3) -> (size, size, 3); outside the frame is filled by replicating the border."""
    return cv2.warpAffine(
        frame,
        warp_matrix(center, side, angle, size),
        (size, size),
        flags=cv2.INTER_AREA if side > size else cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )


def rect_matrix(center: tuple[float, float], width: float, height: float, angle: float, out: tuple[int, int]) -> np.ndarray:
    """2x3 affine matrix: rotate by ``angle`` about ``center``, map the ``width`` x ``height``
    rectangle centred there onto an output of ``out`` = (w, h) pixels."""
    m = cv2.getRotationMatrix2D(center, angle, 1.0)
    sx, sy = out[0] / width, out[1] / height
    m[0] *= sx
    m[1] *= sy
    m[0, 2] += out[0] / 2 - center[0] * sx
    m[1, 2] += out[1] / 2 - center[1] * sy
    return m


def warp_rect(frame: np.ndarray, center: tuple[float, float], width: float, height: float, angle: float, size: int) -> np.ndarray:
    """The rotated ``width`` x ``height`` rectangle, cut out at its own resolution (outside the frame
    replicates the border), then squashed to (size, size, 3)."""
    w, h = max(1, round(width)), max(1, round(height))
    native = cv2.warpAffine(frame, rect_matrix(center, width, height, angle, (w, h)), (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return squash(native, size)


def squash(frame: np.ndarray, size: int) -> np.ndarray:
    """The whole frame resized to size x size, whatever its aspect (the reference's framing)."""
    h, w = frame.shape[:2]
    if (h, w) == (size, size):
        return frame.copy()
    return cv2.resize(frame, (size, size), interpolation=cv2.INTER_AREA if max(h, w) > size else cv2.INTER_LINEAR)


def centre_square(frame: np.ndarray, size: int) -> np.ndarray:
    """The largest centred square, resized: for releases that are already face crops."""
    h, w = frame.shape[:2]
    return warp_square(frame, (w / 2, h / 2), min(h, w), 0.0, size)


def fit_frame(frame: np.ndarray, size: int, geometry: Geometry = "crop") -> np.ndarray:
    """A frame without a face box to the stored square: squashed whole, or its centred square."""
    return squash(frame, size) if geometry == "squash" else centre_square(frame, size)


def crop_box(frame: np.ndarray, box_xywh: tuple[float, float, float, float], margin: float, size: int, geometry: Geometry = "crop") -> np.ndarray:
    """A given face box (AffectNet's lists) with ``margin``: squashed, or the square of its longer side."""
    x, y, w, h = box_xywh
    center = (x + w / 2, y + h / 2)
    if geometry == "squash":
        return warp_rect(frame, center, w * (1 + margin), h * (1 + margin), 0.0, size)
    return warp_square(frame, center, max(w, h) * (1 + margin), 0.0, size)


def align(frame: np.ndarray, face: Face, margin: float, size: int, geometry: Geometry = "crop") -> np.ndarray:
    """Level the eye line, then either squash the face box grown by ``margin`` (``squash``, the
    reference's tool with margin 0: the tight MTCNN box) or crop a square of side
    ``(1 + margin) * max(box)`` around the face (``crop``)."""
    if geometry == "squash":
        x0, y0, x1, y1 = face.box
        return warp_rect(frame, face.center, (x1 - x0) * (1 + margin), (y1 - y0) * (1 + margin), face.eye_angle, size)
    return warp_square(frame, face.center, face.side * (1 + margin), face.eye_angle, size)


FACENET_INSTALL = "pip install --no-deps 'facenet-pytorch>=2.6,<3'"


class FaceDetector:
    """MTCNN over batches of frames, keeping the most confident face per frame: facenet-pytorch's
    trained nets run batched over frames and boxes by ``preprocess.mtcnn`` (a fixed few host
    waits per batch on CUDA; on the CPU faster than facenet's ``detect``, with the same faces)."""

    def __init__(self, device: str | None = None, batch_size: int = 32, min_prob: float = 0.9, max_side: int = 360) -> None:
        import torch

        try:
            from facenet_pytorch import MTCNN
        except ImportError:  # not a dependency: its metadata pins torch<2.3, numpy<2, Pillow<10.3, which would break the resolve
            raise InputError(
                f"face detection (MTCNN) needs facenet-pytorch, installed without its outdated pins: {FACENET_INSTALL}"
                " (or run with --no-align on face crops)"
            ) from None

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        from .mtcnn import BatchedMTCNN

        self.mtcnn = MTCNN(keep_all=True, device=self.device)
        self.batched = BatchedMTCNN.from_facenet(self.mtcnn)
        self.batch_size = batch_size
        self.min_prob = min_prob
        self.max_side = max_side  # detect on a copy no larger than this; boxes are scaled back

    def detect(self, frames: np.ndarray) -> list[Face | None]:
        """(T, H, W, 3) uint8 RGB -> the most confident face per frame, or None."""
        return [faces[0] if faces else None for faces in self.detect_all(frames)]

    def detect_all(self, frames: np.ndarray) -> list[list[Face]]:
        """(T, H, W, 3) uint8 RGB -> per frame, every face at or above ``min_prob``, most
        confident first."""
        return self.detect_all_stream(iter(frames))

    def detect_stream(self, frames: Iterable[np.ndarray]) -> list[Face | None]:
        """``detect`` over frames as they are decoded: each (H, W, 3) frame is shrunk to the
        detection size on arrival, so memory holds one full frame and one batch of small ones."""
        return [faces[0] if faces else None for faces in self.detect_all_stream(frames)]

    def detect_all_stream(self, frames: Iterable[np.ndarray]) -> list[list[Face]]:
        """``detect_all`` over an iterable of (H, W, 3) uint8 RGB frames of one size, batch by batch
        (the same batches, hence the same faces, as over the stacked frames)."""
        out: list[list[Face]] = []
        chunk: list[np.ndarray] = []
        scale = 1.0
        for frame in frames:
            if not chunk and not out:
                scale = self._scale(*frame.shape[:2])
            chunk.append(self._shrink(frame, scale))
            if len(chunk) == self.batch_size:
                out += self._detect_small(np.stack(chunk), scale)
                chunk = []
        if chunk:
            out += self._detect_small(np.stack(chunk), scale)
        return out

    def _scale(self, h: int, w: int) -> float:
        """Shrink factor to the detection size (at most ``max_side``); too small frames are a ``MediaError``."""
        if min(h, w) * min(1.0, self.max_side / max(h, w)) < MIN_DETECT_SIDE:
            raise MediaError(f"frames of {w}x{h} are too small (or too thin) for face detection")
        return min(1.0, self.max_side / max(h, w))

    @staticmethod
    def _shrink(frame: np.ndarray, scale: float) -> np.ndarray:
        """(H, W, 3) -> (round(H * scale), round(W * scale), 3), the detector's input."""
        if scale >= 1:
            return frame
        h, w = frame.shape[:2]
        return cv2.resize(frame, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)

    def _detect_small(self, chunk: np.ndarray, scale: float) -> list[list[Face]]:
        """(B, h, w, 3) shrunk frames -> per frame, faces in the full frame's coordinates."""
        out = []
        for d in self.batched.detect(chunk):
            p = d.probs_K.astype(np.float64)
            out.append(
                [
                    Face(tuple(float(v) / scale for v in d.boxes_K4[j]), float(p[j]), d.points_K52[j].astype(np.float64) / scale)
                    for j in np.argsort(-np.nan_to_num(p, nan=-1.0), kind="stable")
                    if p[j] >= self.min_prob
                ]
            )
        return out


@dataclass(frozen=True)
class AlignedClip:
    frames: np.ndarray  # (T, size, size, 3) uint8
    faces_found: int
    faces_filled: int  # frames without a face, aligned with the nearest detected frame's geometry
    span: tuple[int, int]  # [first, last + 1) frames of the source kept: where the face is


class NotEnoughFaces(Exception):
    pass


def fill_nearest(faces: list[Face | None]) -> list[Face]:
    """Each frame without a face borrows the face of the nearest frame that has one (earlier
    frame on ties). Needs at least one detection."""
    found = [i for i, f in enumerate(faces) if f is not None]
    if not found:
        raise NotEnoughFaces("no face in any frame")
    idx = np.asarray(found)
    return [faces[i] if faces[i] is not None else faces[int(idx[np.argmin(np.abs(idx - i))])] for i in range(len(faces))]


@dataclass(frozen=True)
class ClipPlan:
    """Where a clip's face is, from detection alone (no pixels): ``span`` [first, last + 1) of
    the source frames, the face to align each frame of the span with, and the counts."""

    span: tuple[int, int]
    faces: list[Face]  # one per frame of the span; frames without a face borrow the nearest detection
    faces_found: int
    faces_filled: int


def plan_clip(faces: list[Face | None], min_face_frames: int, min_face_fraction: float = 0.0) -> ClipPlan:
    """The span from the first to the last frame with a face (frames between without a face
    borrow the nearest detection). Kept when it holds ``min_face_frames`` face frames (one
    training window; the clip's length if shorter) and, optionally, ``min_face_fraction`` of
    all frames; otherwise ``NotEnoughFaces`` says how many face frames were found."""
    found_at = [i for i, f in enumerate(faces) if f is not None]
    need = min(min_face_frames, len(faces))
    if not found_at or len(found_at) < need or len(found_at) < min_face_fraction * len(faces):
        rule = (
            f"{need} (one training window; min_face_frames)"
            if len(found_at) < need or not found_at
            else f"{min_face_fraction:.0%} of the frames (min_face_fraction)"
        )
        raise NotEnoughFaces(f"a face in {len(found_at)} of {len(faces)} frames; a clip needs {rule}")
    a, b = found_at[0], found_at[-1] + 1
    return ClipPlan((a, b), fill_nearest(list(faces[a:b])), len(found_at), (b - a) - len(found_at))


def align_span(frames: Iterable[np.ndarray], plan: ClipPlan, margin: float, size: int, geometry: Geometry = "crop") -> np.ndarray:
    """(b - a, size, size, 3) uint8: the frames of ``plan.span`` aligned, taken from ``frames``
    as they come (a second decoding pass; frames after the span are not read). Fewer frames
    than the span is a ``MediaError`` (the source changed between the passes)."""
    a, b = plan.span
    out = [align(fr, face, margin, size, geometry) for fr, face in zip(itertools.islice(frames, a, b), plan.faces)]
    if len(out) != b - a:
        raise MediaError(f"the second decoding pass gave {a + len(out)} frames, the first at least {b} (the file changed?)")
    return np.stack(out)


def align_clip(
    frames: np.ndarray,
    faces: list[Face | None],
    margin: float,
    size: int,
    min_face_frames: int,
    geometry: Geometry = "crop",
    min_face_fraction: float = 0.0,
) -> AlignedClip:
    """``plan_clip`` + ``align_span`` over frames already in memory, (T, H, W, 3) uint8."""
    plan = plan_clip(faces, min_face_frames, min_face_fraction)
    return AlignedClip(align_span(iter(frames), plan, margin, size, geometry), plan.faces_found, plan.faces_filled, plan.span)
