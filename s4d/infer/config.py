"""``s4d predict``'s settings, and class names given on the command line."""

from __future__ import annotations

from dataclasses import dataclass

from preprocess.errors import InputError
from preprocess.manifest import ManifestError, load_manifest, load_sfer


@dataclass(frozen=True)
class PredictConfig:
    checkpoint: str | None  # our .safetensors or the authors' file; None with ``onnx``
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
    onnx: str | None = None  # an exported head (s4d export) run by onnxruntime instead of a checkpoint
    faces: str = "main"  # main: the main face's timeline | all: one timeline per person (track)

    def __post_init__(self) -> None:
        if self.faces not in ("main", "all"):
            raise InputError(f"--faces must be main or all, got {self.faces!r}")
        if (self.checkpoint is None) == (self.onnx is None):
            raise InputError("give exactly one of --checkpoint and --onnx")
        for name in ("hop", "stride"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise InputError(f"--{name} must be at least 1 frame, got {value}")
        if self.batch_size < 1:
            raise InputError(f"batch_size must be at least 1, got {self.batch_size}")
        if not 0.0 < self.min_face_fraction <= 1.0:
            raise InputError(f"min_face_fraction must be in (0, 1], got {self.min_face_fraction}")
        if self.max_gap_s < 0 or self.min_track_s < 0:
            raise InputError(f"max_gap_s and min_track_s must be >= 0, got {self.max_gap_s} and {self.min_track_s}")
        if not 0.0 < self.min_prob <= 1.0:
            raise InputError(f"min_prob must be in (0, 1], got {self.min_prob}")
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            raise InputError(f"--device must be auto, cpu or cuda[:N], got {self.device!r}")


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
        raise InputError(f"--classes {spec!r}: empty class name")
    return {"video": names}
