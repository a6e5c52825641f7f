"""``s4d predict``'s ``Predictor``: emotions of the main face in a raw video or a still image.

A video is read twice as a stream, so its length is not bounded by memory: the first pass runs
MTCNN on every frame (the preprocessing detector) and ``tracking.main_face`` picks the face to
follow; the second pass aligns only the frames the windows need, exactly as preprocessing did
for the training data (eye-line alignment, the stored size and crop the checkpoint records),
then resizes and normalises them as the eval loader does. Windows of ``frames`` frames at the
training stride slide by ``hop``; a window with too few face frames is reported as "no face"
and never classified. The clip-level answer is the mean over the windows with a face.
"""
# Long file: one class, Predictor; its two streaming passes over a video (detect and track, then
# align only the frames the windows need) and the image path share its state and helpers.

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from preprocess.adapters.base import IMAGE_EXTS
from preprocess.errors import InputError
from preprocess.faces import Face, FaceDetector, fill_nearest
from preprocess.media import MediaError, iter_video, read_image

from ..checkpoint import CheckpointError
from ..runtime import resolve_device
from ..runtime.memory import release_freed_memory
from .config import PredictConfig, parse_classes
from .faces import DEFAULT_INPUT, FacePrep, to_tensor
from .heads import OnnxHeads, TorchHeads
from .outputs import no_face_segments
from .results import answer, track_result, window_rows
from .tracking import appearance, every_face, main_face
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
                raise InputError(f"--classes gives {len(names)} names but the {task} head has {n} classes; give {n}")
            return names
        stored = tuple(self.heads.class_names.get(task, ()))
        if not stored:
            raise CheckpointError(
                f"{self.heads.source}: the {task} head has no class names (not trained by s4d); "
                f"pass --classes: a manifest such as dfew names both heads, 'a,b,c' the video head"
            )
        return stored

    @property
    def detector(self) -> FaceDetector:
        if self._detector is None:
            self._detector = FaceDetector(device=str(self.device) if self.device.type == "cuda" else "cpu", min_prob=self.cfg.min_prob)
        return self._detector

    def stream(self, frames: Iterable[np.ndarray], fps: float):
        """A live source: (H, W, 3) RGB frames as they arrive -> a ``live.LiveStream`` of results
        per window, each the moment its last frame is in (memory bounded, see ``live``)."""
        from .live import LiveStream

        self.check_video_head("the live source")
        return LiveStream(self, frames, fps)

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

    def _detect_stream(self, path: Path, looks: list[list[np.ndarray]] | None = None) -> tuple[float, list[list[Face]]]:
        """Detections of every frame, decoded and searched a batch at a time; only the faces
        (boxes, scores, landmarks; with ``looks``, also each face's appearance, appended there)
        are kept, so memory does not grow with the video's length."""
        fps, frames = iter_video(path)
        faces: list[list[Face]] = []
        chunk: list[np.ndarray] = []

        def search() -> None:
            found = self._detect(path, np.stack(chunk))
            if looks is not None:
                looks.extend([appearance(frame, f.box) for f in per_frame] for frame, per_frame in zip(chunk, found))
            faces.extend(found)
            chunk.clear()

        for frame in frames:
            chunk.append(frame)
            if len(chunk) == self.detector.batch_size:
                search()
                if len(faces) % (8 * self.detector.batch_size) == 0:
                    release_freed_memory()
        if chunk:
            search()
        return fps, faces

    def _frame_count(self, path: Path) -> tuple[float, int]:
        fps, frames = iter_video(path)
        return fps, sum(1 for _ in frames)

    def _window_probs(self, path: Path, windows: list[np.ndarray], people: list[list], task: str) -> list[np.ndarray]:
        """Second pass: align the frames the face windows of every person need and classify each
        window as soon as its last frame has arrived, so memory holds about one window of crops
        per pending window, however long the video. ``people[p][k]`` is person p's faces in
        window k (None: no face). Returns per person (windows with a face, classes)."""
        todo = [(k, p) for k in range(len(windows)) for p in range(len(people)) if people[p][k] is not None]  # by end
        needed: dict[tuple[int, int], Face | None] = {}
        for k, p in todo:
            for i, f in zip(windows[k], people[p][k]):
                needed.setdefault((p, int(i)), f)
        frames_needed = {i for _, i in needed}
        crops: dict[tuple[int, int], np.ndarray] = {}
        out: list[list[np.ndarray]] = [[] for _ in people]
        ready: list[tuple[int, int]] = []
        ptr = 0

        def flush() -> None:
            batch = [to_tensor(np.stack([crops[p, int(i)] for i in windows[k]])) for k, p in ready]
            probs = self._probs(batch, task)
            for (_, p), row in zip(ready, probs):
                out[p].append(row[None])
            ready.clear()

        _, frames = iter_video(path)
        for i, frame in enumerate(frames):
            if i in frames_needed:
                for p in range(len(people)):
                    if (p, i) in needed:
                        crops[p, i] = self.prep.frame(frame, needed[p, i])
            while ptr < len(todo) and windows[todo[ptr][0]][-1] <= i:
                ready.append(todo[ptr])
                ptr += 1
            if len(ready) >= self.cfg.batch_size:
                flush()
            oldest = windows[ready[0][0]][0] if ready else windows[todo[ptr][0]][0] if ptr < len(todo) else i + 1
            for key in [key for key in crops if key[1] < oldest]:
                del crops[key]
        ready += todo[ptr:]  # windows padded past the end (a video shorter than one window)
        if ready:
            flush()
        return [np.concatenate(rows) if rows else self._none(task) for rows in out]

    def stride_for(self, fps: float) -> int:
        """``--stride``, else the training stride scaled to this video's frame rate, so a window
        spans the same time as a training clip (a 60 fps phone video vs 25-30 fps datasets)."""
        if self.cfg.stride:
            return self.cfg.stride
        if self.train_fps and fps > 0:
            return max(1, round(self.train_stride * fps / self.train_fps))
        return self.train_stride

    def _people(self, path: Path) -> tuple[float, list[list[Face | None]], list[int]]:
        """(fps, per person the detection of every frame or None, detections per person): the
        main face, or with ``faces="all"`` every person strongest first."""
        if not self.align_faces:  # already face crops: every frame is the face
            fps, n = self._frame_count(path)
            return fps, [[None] * n], [n]
        looks: list[list[np.ndarray]] | None = [] if self.cfg.faces == "all" else None
        fps, detections = self._detect_stream(path, looks) if looks is not None else self._detect_stream(path)
        # a face seen for less than min_track_s is a false detection, unless the whole video is
        # that short (a one-frame video is kept by preprocessing too)
        shortest = min(max(1, round(self.cfg.min_track_s * fps)), max(1, len(detections) // 2))
        max_gap = round(self.cfg.max_gap_s * fps)
        if looks is None:
            people = [main_face(detections, max_gap=max_gap, min_detections=shortest)]
        else:
            people = every_face(detections, looks, max_gap, shortest) or [[None] * len(detections)]
        return fps, people, [sum(f is not None for f in tracked) for tracked in people]

    def _window_faces(self, tracked: list[Face | None], windows: list[np.ndarray]) -> list[list[Face | None] | None]:
        """Per window: the face of each sampled frame, or None for a window without enough face.
        As in preprocessing, the share counts detections over every frame the window spans, and
        a frame without one borrows the nearest detected frame's geometry (within the window)."""
        out: list[list[Face | None] | None] = []
        for idx in windows:
            if not self.align_faces:
                out.append([None] * len(idx))
                continue
            lo, hi = int(idx[0]), int(idx[-1])
            span = tracked[lo : hi + 1]
            present = sum(f is not None for f in span)
            if present and present >= self.cfg.min_face_fraction * len(span):
                filled = fill_nearest(span)
                out.append([filled[int(i) - lo] for i in idx])
            else:
                out.append(None)
        return out

    def check_video_head(self, source: str | Path) -> None:
        """Videos need a video head: an exported image head (``s4d export --task image``) is
        refused naming the model and ``source`` (an input file or a live source)."""
        if "video" not in self.heads.heads:
            raise MediaError(
                f"{source}: {self.heads.source} is an image model (exported with --task image) and "
                "classifies still images, not videos; give an image, or export the video head "
                "(s4d export --task video)"
            )

    def predict_video(self, path: Path) -> dict[str, Any]:
        self.check_video_head(path)
        task = self.video_task
        fps, people, found = self._people(path)
        n = len(people[0])
        stride = self.stride_for(fps)
        hop = self.cfg.hop or max(1, self.frames * stride // 2)
        windows = plan_windows(n, self.frames, stride, hop)
        window_faces = [self._window_faces(tracked, windows) for tracked in people]
        probs = self._window_probs(path, windows, window_faces, task)
        names = self.names(task)
        rows = [window_rows(windows, wf, pr, names, fps) for wf, pr in zip(window_faces, probs)]
        result = self._result(path, task, "video", probs[0], rows[0])
        result.update(
            {
                "fps": fps,
                "frames": n,
                "frames_with_face": found[0],
                "no_face_segments": no_face_segments(rows[0], n, fps),
                "window": {
                    "frames": self.frames,
                    "stride": stride,
                    "hop": hop,
                    "align": self.align_faces,
                    "training_stride": self.train_stride,
                    "training_fps": self.train_fps,
                },
            }
        )
        if self.cfg.faces == "all":
            for faces, track_rows in zip(window_faces, rows):  # where the person is: the box at the window's middle frame
                for wf, row in zip(faces, track_rows):
                    if wf is not None and wf[len(wf) // 2] is not None:
                        row["box"] = [round(v, 1) for v in wf[len(wf) // 2].box]
            result["faces"] = "all"
            result["tracks"] = [track_result(p, tracked, pr, rw, names, n, fps) for p, (tracked, pr, rw) in enumerate(zip(people, probs, rows))]
            result["windows"] = [{"track": t["track"], **w} for t in result["tracks"] for w in t["windows"]]
        return result

    # ------------------------------------------------------------------ images

    def predict_image(self, path: Path) -> dict[str, Any]:
        """The image head on the main (largest confident) face, or with ``faces="all"`` on every
        face, largest first; a model whose image head was never trained (``--no-sfer``) sees the
        image as a still clip through its video head. The crop follows the eval transform:
        resize to 1.2x, centre crop."""
        image = read_image(path)
        task = self.image_task
        faces = self._detect(path, image[None])[0] if self.align_faces else []
        if self.cfg.faces == "all":  # every face, largest first
            chosen: list[Face | None] = sorted(faces, key=lambda f: -f.side)
        else:  # the main face: the largest confident one
            chosen = [max(faces, key=lambda f: f.side * f.prob)] if faces else []
        if not self.align_faces:
            chosen = [None]
        names = self.names(task)
        probs = self._probs([self._image_input(image, face, task) for face in chosen], task) if chosen else self._none(task)
        rows: list[dict[str, Any]] = [{"face": bool(chosen), "faces_in_image": len(faces)}] if not chosen else []
        for k, face in enumerate(chosen):
            row: dict[str, Any] = {
                "face": True,
                "faces_in_image": len(faces),
                "probs": {c: float(v) for c, v in zip(names, probs[k])},
                "top": names[int(probs[k].argmax())],
            }
            if face is not None:
                row["box"] = [round(v, 1) for v in face.box]
            rows.append({"track": k, **row} if self.cfg.faces == "all" else row)
        result = self._result(path, task, "image", probs[:1], rows)
        if self.cfg.faces == "all":
            result["faces"] = "all"
            result["tracks"] = [
                {"track": k, "box": row.get("box"), "prediction": answer(probs[k : k + 1], names)} for k, row in enumerate(rows) if row["face"]
            ]
        return result

    def _image_input(self, image: np.ndarray, face: Face | None, task: str) -> torch.Tensor:
        crop = self.prep.image(image, face)
        return to_tensor(crop) if task == "image" else to_tensor(np.repeat(crop[None], self.frames, axis=0))

    def _result(self, path: Path, task: str, kind: str, probs: np.ndarray, rows: list[dict[str, Any]]) -> dict[str, Any]:
        names = self.names(task)
        return {
            "input": str(path),
            "kind": kind,
            "checkpoint": str(self.heads.source),
            "head": task,
            "classes": list(names),
            "prediction": answer(probs, names),
            "windows": rows,
        }
