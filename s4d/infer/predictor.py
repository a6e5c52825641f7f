"""``s4d predict``'s ``Predictor``: emotions of the main face in a raw video or a still image.

A video is read twice as a stream, so its length is not bounded by memory: the first pass runs
MTCNN on every frame (the preprocessing detector) and ``tracking.main_face`` picks the face to
follow; the second pass aligns only the frames the windows need, exactly as preprocessing did
for the training data (eye-line alignment, the stored size and crop the checkpoint records),
then resizes and normalises them as the eval loader does. Windows of ``frames`` frames at the
training stride slide by ``hop``; a window with too few face frames is reported as "no face"
and never classified. The clip-level answer is the mean over the windows with a face.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from preprocess.adapters.base import IMAGE_EXTS
from preprocess.faces import Face, FaceDetector, fill_nearest
from preprocess.media import MediaError, iter_video, read_image

from ..checkpoint import CheckpointError
from ..runtime import resolve_device
from ..runtime.memory import release_freed_memory
from .config import PredictConfig, parse_classes
from .faces import DEFAULT_INPUT, FacePrep, to_tensor
from .heads import OnnxHeads, TorchHeads
from .outputs import no_face_segments
from .tracking import main_face
from .windows import plan_windows


class Predictor:
    """Loads the classifier once (a checkpoint, or an exported ONNX head); ``__call__(path)``
    predicts one file."""

    def __init__(self, cfg: PredictConfig) -> None:
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        self.heads = OnnxHeads(cfg.onnx) if cfg.onnx else TorchHeads(cfg.checkpoint, self.device)
        self.size, self.frames = self.heads.size, self.heads.frames
        recorded = self.heads.input
        settings = {**DEFAULT_INPUT, **recorded}
        self.train_stride = int(settings["stride"])
        self.train_fps = settings.get("fps")  # frame rate the stride was counted at (None: unknown)
        self.align_faces = cfg.align  # raw videos need a face found, whatever the training data was
        try:
            self.prep = FacePrep.from_settings(recorded, self.size)  # framed as the training frames were
        except ValueError as err:
            raise CheckpointError(f"{self.heads.source}: {err}") from None
        self._given_names = parse_classes(cfg.classes) if cfg.classes else {}
        self._names: dict[str, tuple[str, ...]] = {}
        self._detector: FaceDetector | None = None
        self.names(self.video_task)  # fail now, not after decoding a long video

    @property
    def video_task(self) -> str:
        return "video" if "video" in self.heads.heads else next(iter(self.heads.heads))

    @property
    def image_task(self) -> str:
        """``image`` when that head was trained (s4d records its class names; ``--classes`` names
        it for a foreign file), else the video head."""
        trained = self.heads.class_names.get("image") or "image" in self._given_names
        return "image" if "image" in self.heads.heads and trained else self.video_task

    def names(self, task: str) -> tuple[str, ...]:
        if task not in self._names:
            self._names[task] = self._resolve_names(task)
        return self._names[task]

    def _resolve_names(self, task: str) -> tuple[str, ...]:
        n = self.heads.heads[task]
        if task in self._given_names:
            names = self._given_names[task]
            if len(names) != n:
                raise ValueError(f"--classes gives {len(names)} names but the {task} head has {n} classes")
            return names
        stored = tuple(self.heads.class_names.get(task, ()))
        if not stored:
            raise CheckpointError(f"{self.heads.source}: the {task} head has no class names (not trained by s4d); "
                                  f"pass --classes: a manifest such as dfew names both heads, 'a,b,c' the video head")
        return stored

    @property
    def detector(self) -> FaceDetector:
        if self._detector is None:
            self._detector = FaceDetector(device=str(self.device) if self.device.type == "cuda" else "cpu", min_prob=self.cfg.min_prob)
        return self._detector

    def __call__(self, path: str | Path) -> dict[str, Any]:
        path = Path(path)
        if not path.is_file():
            raise MediaError(f"{path}: no such file")
        return self.predict_image(path) if path.suffix.lower() in IMAGE_EXTS else self.predict_video(path)

    # ------------------------------------------------------------------ preparing pixels

    def _probs(self, inputs: list[torch.Tensor], task: str) -> np.ndarray:
        out = [self.heads.probs(torch.stack(inputs[i : i + self.cfg.batch_size]), task) for i in range(0, len(inputs), self.cfg.batch_size)]
        return np.concatenate(out) if out else self._none(task)

    def _none(self, task: str) -> np.ndarray:
        return np.zeros((0, self.heads.heads[task]), np.float32)

    # ------------------------------------------------------------------ videos

    def _detect(self, path: Path, frames: np.ndarray) -> list[list[Face]]:
        try:
            return self.detector.detect_all(frames)
        except MediaError as err:  # frames too small to search: name the file
            raise MediaError(f"{path}: {err}") from None

    def _detect_stream(self, path: Path) -> tuple[float, list[list[Face]]]:
        """Detections of every frame, decoded and searched a batch at a time; only the faces
        (boxes, scores, landmarks) are kept, so memory does not grow with the video's length."""
        fps, frames = iter_video(path)
        faces: list[list[Face]] = []
        chunk: list[np.ndarray] = []
        for frame in frames:
            chunk.append(frame)
            if len(chunk) == self.detector.batch_size:
                faces += self._detect(path, np.stack(chunk))
                chunk = []
                if len(faces) % (8 * self.detector.batch_size) == 0:
                    release_freed_memory()
        if chunk:
            faces += self._detect(path, np.stack(chunk))
        return fps, faces

    def _frame_count(self, path: Path) -> tuple[float, int]:
        fps, frames = iter_video(path)
        return fps, sum(1 for _ in frames)

    def _window_probs(self, path: Path, windows: list[np.ndarray], window_faces: list, task: str) -> np.ndarray:
        """Second pass: align the frames the face windows need and classify each window as soon
        as its last frame has arrived, so memory holds about one window of crops per pending
        window, however long the video. Returns (windows with a face, classes)."""
        todo = [k for k, faces in enumerate(window_faces) if faces is not None]  # by start = by end
        needed: dict[int, Face | None] = {}
        for k in todo:
            for i, f in zip(windows[k], window_faces[k]):
                needed.setdefault(int(i), f)
        crops: dict[int, np.ndarray] = {}
        out: list[np.ndarray] = []
        ready: list[int] = []
        ptr = 0

        def flush() -> None:
            batch = [to_tensor(np.stack([crops[int(i)] for i in windows[k]])) for k in ready]
            out.append(self._probs(batch, task))
            ready.clear()

        _, frames = iter_video(path)
        for i, frame in enumerate(frames):
            if i in needed:
                crops[i] = self.prep.frame(frame, needed[i])
            while ptr < len(todo) and windows[todo[ptr]][-1] <= i:
                ready.append(todo[ptr])
                ptr += 1
            if len(ready) >= self.cfg.batch_size:
                flush()
            oldest = windows[ready[0]][0] if ready else windows[todo[ptr]][0] if ptr < len(todo) else i + 1
            for j in [j for j in crops if j < oldest]:
                del crops[j]
        ready += todo[ptr:]  # windows padded past the end (a video shorter than one window)
        if ready:
            flush()
        return np.concatenate(out) if out else self._none(task)

    def stride_for(self, fps: float) -> int:
        """``--stride``, else the training stride scaled to this video's frame rate, so a window
        spans the same time as a training clip (a 60 fps phone video vs 25-30 fps datasets)."""
        if self.cfg.stride:
            return self.cfg.stride
        if self.train_fps and fps > 0:
            return max(1, round(self.train_stride * fps / self.train_fps))
        return self.train_stride

    def predict_video(self, path: Path) -> dict[str, Any]:
        task = self.video_task
        if self.align_faces:
            fps, detections = self._detect_stream(path)
            # a face seen for less than min_track_s is a false detection, unless the whole video is
            # that short (a one-frame video is kept by preprocessing too)
            shortest = min(max(1, round(self.cfg.min_track_s * fps)), max(1, len(detections) // 2))
            tracked = main_face(detections, max_gap=round(self.cfg.max_gap_s * fps), min_detections=shortest)
            faces_found = sum(f is not None for f in tracked)  # detections of the followed face
        else:  # already face crops: every frame is the face
            fps, n = self._frame_count(path)
            tracked, faces_found = [None] * n, n
        n = len(tracked)
        stride = self.stride_for(fps)
        hop = self.cfg.hop or max(1, self.frames * stride // 2)
        windows = plan_windows(n, self.frames, stride, hop)
        # per window: the face of each sampled frame, or None for a window without enough face.
        # As in preprocessing, the share counts detections over every frame the window spans, and
        # a frame without one borrows the nearest detected frame's geometry (within the window).
        window_faces: list[list[Face | None] | None] = []
        for idx in windows:
            if not self.align_faces:
                window_faces.append([None] * len(idx))
                continue
            lo, hi = int(idx[0]), int(idx[-1])
            span = tracked[lo : hi + 1]
            present = sum(f is not None for f in span)
            if present and present >= self.cfg.min_face_fraction * len(span):
                filled = fill_nearest(span)
                window_faces.append([filled[int(i) - lo] for i in idx])
            else:
                window_faces.append(None)
        probs = self._window_probs(path, windows, window_faces, task)
        names = self.names(task)
        rows, k = [], 0
        for idx, faces in zip(windows, window_faces):
            row: dict[str, Any] = {"start_frame": int(idx[0]), "end_frame": int(idx[-1]), "start_s": round(float(idx[0]) / fps, 3),
                                   "end_s": round(float(idx[-1] + 1) / fps, 3), "face": faces is not None}
            if faces is not None:
                row["probs"] = {c: float(p) for c, p in zip(names, probs[k])}
                row["top"] = names[int(probs[k].argmax())]
                k += 1
            rows.append(row)
        result = self._result(path, task, "video", probs, rows)
        result.update({"fps": fps, "frames": n, "frames_with_face": faces_found, "no_face_segments": no_face_segments(rows, n, fps),
                       "window": {"frames": self.frames, "stride": stride, "hop": hop, "align": self.align_faces,
                                  "training_stride": self.train_stride, "training_fps": self.train_fps}})
        return result

    # ------------------------------------------------------------------ images

    def predict_image(self, path: Path) -> dict[str, Any]:
        """The image head on the main (largest confident) face; a model whose image head was never
        trained (``--no-sfer``) sees the image as a still clip through its video head. The crop
        follows the eval transform: resize to 1.2x, centre crop."""
        image = read_image(path)
        task = self.image_task
        faces = self._detect(path, image[None])[0] if self.align_faces else []
        face = max(faces, key=lambda f: f.side * f.prob) if faces else None
        rows: list[dict[str, Any]] = [{"face": face is not None or not self.align_faces, "faces_in_image": len(faces)}]
        probs = self._none(task)
        if rows[0]["face"]:
            crop = self.prep.image(image, face)
            x = to_tensor(crop) if task == "image" else to_tensor(np.repeat(crop[None], self.frames, axis=0))
            probs = self._probs([x], task)
            names = self.names(task)
            rows[0].update(probs={c: float(p) for c, p in zip(names, probs[0])}, top=names[int(probs[0].argmax())])
            if face is not None:
                rows[0]["box"] = [round(v, 1) for v in face.box]
        return self._result(path, task, "image", probs, rows)

    def _result(self, path: Path, task: str, kind: str, probs: np.ndarray, rows: list[dict[str, Any]]) -> dict[str, Any]:
        names = self.names(task)
        result: dict[str, Any] = {"input": str(path), "kind": kind, "checkpoint": str(self.heads.source), "head": task,
                                  "classes": list(names), "prediction": None, "windows": rows}
        if len(probs):
            mean = probs.mean(axis=0)
            best = int(mean.argmax())
            result["prediction"] = {"class": names[best], "probability": float(mean[best]),
                                    "probs": {c: float(p) for c, p in zip(names, mean)}, "windows_used": len(probs)}
        return result
