"""Small real media written by the tests themselves (no binary fixtures in git)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from preprocess.shards.encoding import encode_clip


def moving_square(frames: int = 24, h: int = 96, w: int = 128, seed: int = 0) -> np.ndarray:
    """(T, H, W, 3) uint8: a bright square drifting over a gradient with a little noise."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(20, 120, w)[None, :, None] + np.linspace(0, 60, h)[:, None, None]
    base = np.clip(ramp + rng.normal(0, 3, (h, w, 3)), 0, 255).astype(np.uint8)
    out = np.repeat(base[None], frames, axis=0)
    for t in range(frames):
        y, x = 10 + t % (h - 40), 10 + (2 * t) % (w - 40)
        out[t, y : y + 30, x : x + 30] = (200, 120 + seed % 100, 40)
    return out


def write_video(path: Path, frames: np.ndarray, fps: float = 25.0, codec: str = "vp9") -> Path:
    path.write_bytes(encode_clip(frames, fps, codec, 30 if codec == "vp9" else 4))
    return path


def write_frames(folder: Path, frames: np.ndarray) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(frames, 1):
        cv2.imwrite(str(folder / f"{i:05d}.jpg"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    return folder


def write_image(path: Path, image: np.ndarray) -> Path:
    cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return path
