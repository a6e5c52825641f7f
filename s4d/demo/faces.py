"""A procedural face-expression dataset for the demo: drawn faces whose brows, eyes and mouth
move over a clip according to the class, with varied identity and a little head motion.

Video classes (the DFER task): ``happy_onset`` (a smile appears), ``happy_offset`` (the same
smile fades: the same frames in reverse order, so only time separates the two), ``surprise``
(brows rise, mouth opens) and ``sad`` (mouth corners drop, brows tilt). Still images (the SFER
task) are apex frames labelled ``neutral``, ``happy``, ``surprise``, ``sad``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

VIDEO_CLASSES = ("happy_onset", "happy_offset", "surprise", "sad")
IMAGE_CLASSES = ("neutral", "happy", "surprise", "sad")


@dataclass(frozen=True)
class Identity:
    skin: tuple[int, int, int]
    background: tuple[int, int, int]
    scale: float  # face height as a fraction of the frame
    center: tuple[float, float]  # fraction of the frame
    eye_gap: float
    noise: float


def random_identity(rng: np.random.Generator) -> Identity:
    tone = rng.uniform(0.35, 1.0)
    skin = (int(90 + 150 * tone), int(60 + 130 * tone), int(40 + 110 * tone))
    bg = tuple(int(v) for v in rng.integers(0, 256, 3))
    return Identity(
        skin, bg, rng.uniform(0.75, 0.95), (rng.uniform(0.45, 0.55), rng.uniform(0.45, 0.55)), rng.uniform(0.32, 0.42), rng.uniform(2, 10)
    )


def draw_face(
    size: int, ident: Identity, smile: float, open_: float, brow: float, frown: float, shift: tuple[float, float], rng: np.random.Generator
) -> np.ndarray:
    """One RGB frame. ``smile``/``frown`` bend the mouth, ``open_`` opens it, ``brow`` raises the
    brows; all in [0, 1]."""
    img = np.empty((size, size, 3), np.uint8)
    img[:] = ident.background
    h = ident.scale * size
    cx = ident.center[0] * size + shift[0] * size
    cy = ident.center[1] * size + shift[1] * size
    cv2.ellipse(img, (int(cx), int(cy)), (int(h * 0.38), int(h * 0.5)), 0, 0, 360, ident.skin, -1, cv2.LINE_AA)
    gap = ident.eye_gap * h
    eye_y = cy - 0.12 * h
    for side in (-1, 1):
        ex = cx + side * gap / 2
        cv2.ellipse(img, (int(ex), int(eye_y)), (int(0.07 * h), int(0.035 * h * (1 + 0.6 * brow))), 0, 0, 360, (250, 250, 250), -1)
        cv2.circle(img, (int(ex), int(eye_y)), max(1, int(0.025 * h)), (30, 20, 10), -1)
        by = eye_y - 0.09 * h - 0.08 * h * brow
        tilt = 0.05 * h * frown * side  # inner ends of the brows rise
        cv2.line(img, (int(ex - 0.08 * h), int(by - tilt)), (int(ex + 0.08 * h), int(by + tilt)), (40, 25, 15), max(1, int(0.025 * h)))
    mouth_y = cy + 0.22 * h
    half = 0.15 * h
    bend = 0.09 * h * (smile - frown)
    xs = np.linspace(-half, half, 12)
    upper = mouth_y - bend * (1 - (xs / half) ** 2) * -1 - 0.5 * 0.1 * h * open_
    lower = mouth_y - bend * (1 - (xs / half) ** 2) * -1 + 0.5 * 0.1 * h * open_ + 0.01 * h
    pts = np.concatenate([np.stack([cx + xs, upper], 1), np.stack([cx + xs[::-1], lower[::-1]], 1)]).astype(np.int32)
    cv2.fillPoly(img, [pts], (120, 30, 40), cv2.LINE_AA)
    noisy = img.astype(np.float32) + rng.normal(0, ident.noise, img.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def expression_track(cls: str, frames: int) -> list[dict[str, float]]:
    t = np.linspace(0, 1, frames)
    ramp = np.clip((t - 0.15) / 0.6, 0, 1)  # neutral, then the expression builds up
    if cls == "happy_onset":
        return [dict(smile=r, open_=0.2 * r, brow=0.1 * r, frown=0.0) for r in ramp]
    if cls == "happy_offset":
        return expression_track("happy_onset", frames)[::-1]
    if cls == "surprise":
        return [dict(smile=0.0, open_=r, brow=r, frown=0.0) for r in ramp]
    if cls == "sad":
        return [dict(smile=0.0, open_=0.0, brow=0.0, frown=r) for r in ramp]
    raise ValueError(f"unknown demo class {cls!r}")


APEX = {
    "neutral": dict(smile=0.0, open_=0.0, brow=0.0, frown=0.0),
    "happy": dict(smile=1.0, open_=0.2, brow=0.1, frown=0.0),
    "surprise": dict(smile=0.0, open_=1.0, brow=1.0, frown=0.0),
    "sad": dict(smile=0.0, open_=0.0, brow=0.0, frown=1.0),
}


def make_clip(cls: str, rng: np.random.Generator, frames: int = 32, size: int = 64) -> np.ndarray:
    ident = random_identity(rng)
    drift = rng.normal(0, 0.01, (frames, 2)).cumsum(0)  # a little head motion
    return np.stack([draw_face(size, ident, shift=tuple(drift[i]), rng=rng, **e) for i, e in enumerate(expression_track(cls, frames))])


def make_story(
    rng: np.random.Generator, classes: tuple[str, ...] = VIDEO_CLASSES, frames_per_part: int = 32, size: int = 64
) -> tuple[np.ndarray, list[tuple[str, int, int]]]:
    """One identity acting the ``classes`` one after another (the demo's ``predict`` input):
    (T, size, size, 3) frames and the true parts as (class, first frame, end frame)."""
    ident = random_identity(rng)
    track = [e for cls in classes for e in expression_track(cls, frames_per_part)]
    drift = rng.normal(0, 0.01, (len(track), 2)).cumsum(0)
    frames = np.stack([draw_face(size, ident, shift=tuple(drift[i]), rng=rng, **e) for i, e in enumerate(track)])
    return frames, [(cls, i * frames_per_part, (i + 1) * frames_per_part) for i, cls in enumerate(classes)]


def make_image(cls: str, rng: np.random.Generator, size: int = 72) -> np.ndarray:
    return draw_face(size, random_identity(rng), shift=(0.0, 0.0), rng=rng, **APEX[cls])


def write_dataset(root: str | Path, *, clips_per_class: int = 60, images_per_class: int = 60, seed: int = 0) -> tuple[Path, Path]:
    """Writes ``videos/*.webm`` + ``videos.csv`` (path,label,split: 80% train / 20% test) and
    ``images/*.jpg`` + ``images.csv`` under ``root``; returns the two CSV paths."""
    from preprocess.shards.encoding import encode_clip

    root = Path(root)
    rng = np.random.default_rng(seed)
    (root / "videos").mkdir(parents=True, exist_ok=True)
    (root / "images").mkdir(parents=True, exist_ok=True)
    vrows, irows = ["path,label,split"], ["path,label,split"]
    for cls in VIDEO_CLASSES:
        for i in range(clips_per_class):
            name = f"videos/{cls}_{i:03d}.webm"
            (root / name).write_bytes(encode_clip(make_clip(cls, rng), 25.0, "vp9", 31))
            vrows.append(f"{name},{cls},{'test' if i % 5 == 0 else 'train'}")
    for cls in IMAGE_CLASSES:
        for i in range(images_per_class):
            name = f"images/{cls}_{i:03d}.jpg"
            cv2.imwrite(str(root / name), cv2.cvtColor(make_image(cls, rng), cv2.COLOR_RGB2BGR))
            irows.append(f"{name},{cls},train")
    (root / "videos.csv").write_text("\n".join(vrows) + "\n")
    (root / "images.csv").write_text("\n".join(irows) + "\n")
    return root / "videos.csv", root / "images.csv"
