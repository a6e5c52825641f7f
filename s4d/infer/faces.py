"""Preparing a raw frame the way the training data was prepared: preprocessing's alignment
(eye line, margin, squash or crop framing) at the stored size, the manifest's stored crop,
the model's size, then the loaders' normalisation. The settings come from the checkpoint
(``input``, recorded by ``s4d train``), with defaults for foreign and older files."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch

from pipelines.config import IMAGENET_MEAN, IMAGENET_STD
from preprocess.errors import InputError
from preprocess.faces import Face, align, fit_frame
from preprocess.manifest import GEOMETRIES

DEFAULT_INPUT = {"stride": 4, "fps": None, "crop": None, "margin": 0.25, "geometry": "crop"}  # foreign/older checkpoints


@dataclass(frozen=True)
class FacePrep:
    size: int  # the model's input side
    stored_size: int  # the side preprocessing stored
    margin: float
    geometry: str  # squash | crop
    crop: tuple[int, int, int, int] | None = None  # (top, left, h, w) of the stored frame

    def __post_init__(self) -> None:
        if self.geometry not in GEOMETRIES:
            raise InputError(f"input.geometry must be squash or crop, got {self.geometry!r}")

    @classmethod
    def from_settings(cls, recorded: dict[str, Any], size: int) -> "FacePrep":
        settings = {**DEFAULT_INPUT, "stored_size": size, **recorded}
        return cls(
            size,
            int(settings["stored_size"]),
            float(settings["margin"]),
            str(settings["geometry"]),
            tuple(settings["crop"]) if settings["crop"] else None,
        )

    def frame(self, frame_HWC: np.ndarray, face: Face | None) -> np.ndarray:
        """One video frame: aligned at the stored size, the stored crop, then the model's size."""
        out = (
            align(frame_HWC, face, self.margin, self.stored_size, self.geometry)
            if face is not None
            else fit_frame(frame_HWC, self.stored_size, self.geometry)
        )
        if self.crop is not None:
            top, left, h, w = self.crop
            out = out[top : top + h, left : left + w]
        if out.shape[:2] != (self.size, self.size):
            out = cv2.resize(out, (self.size, self.size), interpolation=cv2.INTER_AREA if out.shape[0] > self.size else cv2.INTER_LINEAR)
        return out

    def image(self, image_HWC: np.ndarray, face: Face | None) -> np.ndarray:
        """A still image as the eval transform sees one: aligned at 1.2x the size, centre crop."""
        big = round(self.size * 1.2)
        out = align(image_HWC, face, self.margin, big, self.geometry) if face is not None else fit_frame(image_HWC, big, self.geometry)
        off = (big - self.size) // 2
        return out[off : off + self.size, off : off + self.size]


_MEAN = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
_STD = torch.tensor(IMAGENET_STD).view(3, 1, 1)


def to_tensor(frames_THWC: np.ndarray) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> normalised (3, T, H, W); (H, W, 3) -> (3, H, W)."""
    x = torch.from_numpy(np.ascontiguousarray(frames_THWC)).float() / 255.0
    if x.ndim == 3:
        return (x.permute(2, 0, 1) - _MEAN) / _STD
    return ((x.permute(0, 3, 1, 2) - _MEAN) / _STD).permute(1, 0, 2, 3)
