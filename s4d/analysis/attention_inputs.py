"""Inputs of ``s4d analyze attention``, prepared as the model saw its training data.

Raw files go through ``s4d predict``'s face path (``Predictor``: MTCNN, the main face's track,
``FacePrep`` alignment at the checkpoint's recorded size and crop; ``align=False`` takes the
frames as they are): a video gives one clip, the middle window with a face at the training
stride; an image gives the main face, cropped as the eval transform does. Manifest mode reads
a fold's test split through the analyses' data path (``collect``), the first test clip of each.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from pipelines import Loader
from pipelines.config import IMAGENET_MEAN, IMAGENET_STD
from preprocess.adapters.base import IMAGE_EXTS
from preprocess.errors import InputError
from preprocess.manifest import load_manifest
from preprocess.media import iter_video, read_image

from ..eval.data import eval_loader_config
from ..eval.protocol import flat_clips
from ..infer import PredictConfig, Predictor
from ..infer.faces import to_tensor
from ..infer.windows import plan_windows
from ..models import Classifier
from ..runtime import dali_device_id
from .attention import Prepared
from .collect import task_data


class FacePath(Predictor):
    """``Predictor``'s face preparation without its class names: attention needs no names, so a
    foreign checkpoint (the authors' file) needs no ``--classes`` here."""

    def names(self, task: str) -> tuple[str, ...]:
        return tuple(str(i) for i in range(self.heads.heads[task]))

    @property
    def model(self) -> Classifier:
        return self.heads.model


def face_path(checkpoint: str, *, align: bool, device: str) -> FacePath:
    return FacePath(PredictConfig(checkpoint, align=align, device=device))


def prepare_video(fp: FacePath, path: Path) -> Prepared:
    """The middle window with a face of ``path``: x (3, T, H, W), frames (T, H, W, 3) uint8."""
    fps, people, _ = fp._people(path)
    stride = fp.stride_for(fps)
    windows = plan_windows(len(people[0]), fp.frames, stride, max(1, fp.frames * stride // 2))
    faces = fp._window_faces(people[0], windows)
    with_face = [k for k, f in enumerate(faces) if f is not None]
    if not with_face:
        raise InputError(f"{path}: no face found in any window; give --no-align if its frames are already face crops")
    k = with_face[len(with_face) // 2]
    needed = {int(i): f for i, f in zip(windows[k], faces[k])}
    crops: dict[int, np.ndarray] = {}
    _, frames = iter_video(path)
    for i, frame in enumerate(frames):
        if i in needed:
            crops[i] = fp.prep.frame(frame, needed[i])
        if len(crops) == len(needed):
            break
    clip_THWC = np.stack([crops[int(i)] for i in windows[k]])
    return Prepared(path.name, to_tensor(clip_THWC), clip_THWC)


def prepare_image(fp: FacePath, path: Path) -> Prepared:
    """The main face of ``path``: x (3, H, W), frames (1, H, W, 3) uint8."""
    image = read_image(path)
    face = None
    if fp.align_faces:
        faces = fp._detect(path, image[None])[0]
        if not faces:
            raise InputError(f"{path}: no face found; give --no-align if it is already a face crop")
        face = max(faces, key=lambda f: f.side * f.prob)
    crop = fp.prep.image(image, face)
    return Prepared(path.name, to_tensor(crop), crop[None])


def prepare_files(fp: FacePath, paths: list[Path]) -> Iterator[Prepared]:
    for path in paths:
        if not Path(path).is_file():
            raise InputError(f"{path}: no such file")
    for path in map(Path, paths):
        yield prepare_image(fp, path) if path.suffix.lower() in IMAGE_EXTS else prepare_video(fp, path)


_MEAN = torch.tensor(IMAGENET_MEAN).view(3, 1, 1, 1)
_STD = torch.tensor(IMAGENET_STD).view(3, 1, 1, 1)


def to_frames(x: torch.Tensor) -> np.ndarray:
    """Normalised (3, T, H, W) or (3, H, W) -> uint8 (T, H, W, 3) ((1, H, W, 3) for an image)."""
    x_CTHW = x.float().cpu()[:, None] if x.ndim == 3 else x.float().cpu()
    pixels = (x_CTHW * _STD + _MEAN).clamp(0, 1) * 255
    return pixels.round().byte().permute(1, 2, 3, 0).numpy()


def prepare_manifest(
    model: Classifier, manifest: str, *, fold: str | None, data_root: str | None, limit: int, backend: str, device: torch.device
) -> Iterator[Prepared]:
    """The first ``limit`` samples (a fixed random subset) of the fold's test split; a video's
    first test clip."""
    m = load_manifest(manifest)
    ds, _ = task_data(m, manifest, fold, data_root, limit)
    loader = Loader(ds, eval_loader_config(m, model.config.encoder, batch_size=min(limit, 8)), backend=backend, device_id=dali_device_id(device))
    for batch in loader.epoch(0):
        x = batch["pixels"]
        flat, clips = flat_clips(x)
        for b, key in enumerate(batch["keys"]):
            one = flat[b * clips].cpu()
            yield Prepared(str(key), one, to_frames(one))
