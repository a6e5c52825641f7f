"""``s4d predict``: emotions of the main face in a raw video or a still image.

A video is read twice as a stream, so its length is not bounded by memory: the first pass runs
MTCNN on every frame (the preprocessing detector) and ``tracking.main_face`` picks the face to
follow; the second pass aligns only the frames the windows need, exactly as preprocessing did
for the training data (eye-line alignment, the stored size and crop the checkpoint records),
then resizes and normalises them as the eval loader does. Windows of ``frames`` frames at the
training stride slide by ``hop``; a window with too few face frames is reported as "no face"
and never classified. The clip-level answer is the mean over the windows with a face.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from pipelines import LoaderConfig
from preprocess.adapters.base import IMAGE_EXTS
from preprocess.faces import Face, FaceDetector, align, fill_nearest, fit_frame
from preprocess.manifest import ManifestError, load_manifest, load_sfer
from preprocess.media import MediaError, iter_video, read_image

from ..checkpoint import CheckpointError, checkpoint_meta, load_model
from ..models import Classifier
from ..runtime import autocast, autocast_dtype, resolve_device
from .tracking import main_face
from .windows import plan_windows

DEFAULT_INPUT = {"stride": 4, "fps": None, "crop": None, "margin": 0.25, "geometry": "crop"}  # foreign/older checkpoints


@dataclass(frozen=True)
class PredictConfig:
    checkpoint: str
    hop: int | None = None  # frames between window starts (default: half a window)
    stride: int | None = None  # frame stride in a window (default: the training stride, scaled to the video's fps)
    align: bool = True  # detect and align the face; False for videos that are already face crops
    classes: str | None = None  # comma-separated names or a manifest, for checkpoints without names
    device: str = "auto"
    batch_size: int = 8
    min_face_fraction: float = 0.5  # a window needs faces in at least this share of its frames
    max_gap_s: float = 0.5  # missed detections up to this long borrow the nearest face of the track
    min_track_s: float = 0.2  # a face seen for less time than this (in detections) is a false positive
    min_prob: float = 0.9  # MTCNN confidence for a face

    def __post_init__(self) -> None:
        for name in ("hop", "stride"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1 frame, got {value}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        if not 0.0 < self.min_face_fraction <= 1.0:
            raise ValueError(f"min_face_fraction must be in (0, 1], got {self.min_face_fraction}")
        if self.max_gap_s < 0 or self.min_track_s < 0:
            raise ValueError(f"max_gap_s and min_track_s must be >= 0, got {self.max_gap_s} and {self.min_track_s}")
        if not 0.0 < self.min_prob <= 1.0:
            raise ValueError(f"min_prob must be in (0, 1], got {self.min_prob}")
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            raise ValueError(f"device must be auto, cpu or cuda[:N], got {self.device!r}")


def parse_classes(spec: str) -> dict[str, tuple[str, ...]]:
    """Names per head. A manifest (name or path) names the video head with its classes and the
    image head with its SFER source's; ``"a,b,c"`` names the video head only."""
    if "," not in spec:
        try:
            m = load_manifest(spec)
        except ManifestError:
            raise ManifestError(f"--classes {spec!r}: not a manifest, and one class name is not a classifier") from None
        sfer = load_sfer(m) if m.modality == "video" else None
        return {m.modality: m.classes, **({"image": sfer.classes} if sfer else {})}
    names = tuple(c.strip() for c in spec.split(","))
    if any(not c for c in names):
        raise ValueError(f"--classes {spec!r}: empty class name")
    return {"video": names}


def release_freed_memory() -> None:
    """Hand freed heap pages back to the OS (glibc ``malloc_trim``). MTCNN's per-batch pyramids
    leave the heap fragmented: without this the detection pass grew by ~70 KB per 640x360
    frame (BENCHMARKS.md); elsewhere a no-op."""
    global _LIBC
    if _LIBC is None:
        import ctypes
        import ctypes.util

        try:
            _LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _LIBC.malloc_trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):
            _LIBC = False
    if _LIBC:
        _LIBC.malloc_trim(0)


_LIBC = None


class Predictor:
    """Loads the checkpoint once; ``__call__(path)`` predicts one file."""

    def __init__(self, cfg: PredictConfig) -> None:
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        model = load_model(cfg.checkpoint)
        if not isinstance(model, Classifier):
            raise CheckpointError(f"{cfg.checkpoint}: a pre-training (MAE) checkpoint has no classifier head; fine-tune it first")
        self.model = model.to(self.device).eval()
        self.amp = autocast_dtype("auto", self.device)  # bf16 on CUDA, as the model was trained
        enc = model.config.encoder
        self.size, self.frames = enc.img_size, enc.num_frames
        recorded = checkpoint_meta(cfg.checkpoint).get("input") or {}
        settings = {**DEFAULT_INPUT, "stored_size": self.size, **recorded}
        self.train_stride = int(settings["stride"])
        self.train_fps = settings.get("fps")  # frame rate the stride was counted at (None: unknown)
        self.align_faces = cfg.align  # raw videos need a face found, whatever the training data was
        self.margin = float(settings["margin"])
        self.geometry = str(settings["geometry"])  # squash or crop, as the training frames were framed
        if self.geometry not in ("squash", "crop"):
            raise CheckpointError(f"{cfg.checkpoint}: input.geometry must be squash or crop, got {self.geometry!r}")
        self.stored_size = int(settings["stored_size"])
        self.crop = tuple(settings["crop"]) if settings["crop"] else None
        loader = LoaderConfig()
        self.mean = torch.tensor(loader.mean).view(3, 1, 1)
        self.std = torch.tensor(loader.std).view(3, 1, 1)
        self._given_names = parse_classes(cfg.classes) if cfg.classes else {}
        self._names: dict[str, tuple[str, ...]] = {}
        self._detector: FaceDetector | None = None
        self.names(self.video_task)  # fail now, not after decoding a long video

    @property
    def video_task(self) -> str:
        return "video" if "video" in self.model.head else next(iter(self.model.head))

    @property
    def image_task(self) -> str:
        """``image`` when that head was trained (s4d records its class names; ``--classes`` names
        it for a foreign file), else the video head."""
        trained = self.model.config.class_names.get("image") or "image" in self._given_names
        return "image" if "image" in self.model.head and trained else self.video_task

    def names(self, task: str) -> tuple[str, ...]:
        if task not in self._names:
            self._names[task] = self._resolve_names(task)
        return self._names[task]

    def _resolve_names(self, task: str) -> tuple[str, ...]:
        n = self.model.config.heads[task]
        if task in self._given_names:
            names = self._given_names[task]
            if len(names) != n:
                raise ValueError(f"--classes gives {len(names)} names but the {task} head has {n} classes")
            return names
        stored = tuple(self.model.config.class_names.get(task, ()))
        if not stored:
            raise CheckpointError(f"{self.cfg.checkpoint}: the {task} head has no class names (not trained by s4d); "
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

    def _crop(self, frame: np.ndarray, face: Face | None) -> np.ndarray:
        """One aligned frame at the stored size, then the stored crop, then the model's size."""
        out = (align(frame, face, self.margin, self.stored_size, self.geometry) if face is not None
               else fit_frame(frame, self.stored_size, self.geometry))
        if self.crop is not None:
            top, left, h, w = self.crop
            out = out[top : top + h, left : left + w]
        if out.shape[:2] != (self.size, self.size):
            out = cv2.resize(out, (self.size, self.size), interpolation=cv2.INTER_AREA if out.shape[0] > self.size else cv2.INTER_LINEAR)
        return out

    def _tensor(self, frames_THWC: np.ndarray) -> torch.Tensor:
        """uint8 (T, H, W, 3) -> normalised (3, T, H, W); (H, W, 3) -> (3, H, W)."""
        x = torch.from_numpy(np.ascontiguousarray(frames_THWC)).float() / 255.0
        if x.ndim == 3:
            return (x.permute(2, 0, 1) - self.mean) / self.std
        return ((x.permute(0, 3, 1, 2) - self.mean) / self.std).permute(1, 0, 2, 3)

    @torch.no_grad()
    def _probs(self, inputs: list[torch.Tensor], task: str) -> np.ndarray:
        out = []
        for i in range(0, len(inputs), self.cfg.batch_size):
            x = torch.stack(inputs[i : i + self.cfg.batch_size]).to(self.device)
            with autocast(self.device, self.amp):
                out.append(self.model(x, task).float().softmax(-1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.model.config.heads[task]), np.float32)

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
            batch = [self._tensor(np.stack([crops[int(i)] for i in windows[k]])) for k in ready]
            out.append(self._probs(batch, task))
            ready.clear()

        _, frames = iter_video(path)
        for i, frame in enumerate(frames):
            if i in needed:
                crops[i] = self._crop(frame, needed[i])
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
        return np.concatenate(out) if out else np.zeros((0, self.model.config.heads[task]), np.float32)

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
        probs = np.zeros((0, self.model.config.heads[task]), np.float32)
        if rows[0]["face"]:
            big = round(self.size * 1.2)
            crop = align(image, face, self.margin, big, self.geometry) if face is not None else fit_frame(image, big, self.geometry)
            off = (big - self.size) // 2
            crop = crop[off : off + self.size, off : off + self.size]
            x = self._tensor(crop) if task == "image" else self._tensor(np.repeat(crop[None], self.frames, axis=0))
            probs = self._probs([x], task)
            names = self.names(task)
            rows[0].update(probs={c: float(p) for c, p in zip(names, probs[0])}, top=names[int(probs[0].argmax())])
            if face is not None:
                rows[0]["box"] = [round(v, 1) for v in face.box]
        return self._result(path, task, "image", probs, rows)

    def _result(self, path: Path, task: str, kind: str, probs: np.ndarray, rows: list[dict[str, Any]]) -> dict[str, Any]:
        names = self.names(task)
        result: dict[str, Any] = {"input": str(path), "kind": kind, "checkpoint": str(self.cfg.checkpoint), "head": task,
                                  "classes": list(names), "prediction": None, "windows": rows}
        if len(probs):
            mean = probs.mean(axis=0)
            best = int(mean.argmax())
            result["prediction"] = {"class": names[best], "probability": float(mean[best]),
                                    "probs": {c: float(p) for c, p in zip(names, mean)}, "windows_used": len(probs)}
        return result


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
        path.write_text(json.dumps(result, indent=2) + "\n")
    elif path.suffix.lower() == ".csv":
        with path.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["start_s", "end_s", "face", "top", *result["classes"]])
            for r in result["windows"]:
                p = r.get("probs", {})
                w.writerow([r.get("start_s", ""), r.get("end_s", ""), int(r["face"]), r.get("top", ""),
                            *(f"{p[c]:.6f}" if c in p else "" for c in result["classes"])])
    else:
        raise ValueError(f"--out {path}: use a .json or .csv file name")
    return path


def plot_timeline(result: dict[str, Any], path: str | Path, title: str | None = None,
                  parts: list[tuple[str, float, float]] | None = None) -> Path:
    """Class probabilities over time (window centres), no-face stretches shaded grey; ``parts``
    (label, start s, end s) are marked along the top, e.g. the known truth of a test video."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = result["windows"]
    fig, ax = plt.subplots(figsize=(8, 3.2))
    if result["kind"] == "video":
        centres = [(r["start_s"] + r["end_s"]) / 2 for r in rows]
        for c in result["classes"]:
            xs = [x for x, r in zip(centres, rows) if r["face"]]
            ys = [r["probs"][c] for r in rows if r["face"]]
            ax.plot(xs, ys, marker="o", ms=3, lw=1.5, label=c)
        for s, e in result["no_face_segments"]:
            ax.axvspan(s, e, color="0.85", zorder=0, label="no face" if s == result["no_face_segments"][0][0] else None)
        for k, (label, s, e) in enumerate(parts or []):
            ax.axvspan(s, e, ymin=0.94, ymax=1.0, color=f"C{result['classes'].index(label)}" if label in result["classes"] else "0.5",
                       alpha=0.6, lw=0)
            ax.text((s + e) / 2, 1.02, label, ha="center", va="bottom", fontsize=7, transform=ax.get_xaxis_transform())
            if k:
                ax.axvline(s, color="0.6", lw=0.8, ls=":")
        ax.set_xlabel("time (s), window centres")
        end = max((r["end_s"] for r in rows), default=1.0)
        ax.set_xlim(0, end)
    else:
        probs = rows[0].get("probs", {})
        ax.bar(range(len(result["classes"])), [probs.get(c, 0.0) for c in result["classes"]])
        ax.set_xticks(range(len(result["classes"])), result["classes"], rotation=30, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("probability")
    pred = result["prediction"]
    ax.set_title(title or (f"{Path(result['input']).name}: {pred['class']} ({pred['probability']:.2f})" if pred else
                           f"{Path(result['input']).name}: no face"), fontsize=10, pad=16 if parts else 6)
    if result["kind"] == "video":
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def summary_line(result: dict[str, Any]) -> str:
    pred = result["prediction"]
    if result["kind"] == "image":
        return f"{result['input']}: " + (f"{pred['class']} {pred['probability']:.2f}" if pred else "no face")
    with_face = sum(r["face"] for r in result["windows"])
    span = f"{result['frames'] / result['fps']:.1f} s, {len(result['windows'])} windows, {with_face} with a face"
    if pred is None:
        return f"{result['input']}: no face ({span})"
    return f"{result['input']}: {pred['class']} {pred['probability']:.2f} ({span})"
