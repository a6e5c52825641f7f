"""The pure-PyTorch path (no DALI): PyAV / OpenCV decoding and torchvision v2 resizing.

Same batch plan, same frame indices and the same output as the DALI graphs: training batches
are decoded uint8, augmented afterwards by ``augment.BatchAugment`` (shared by both backends);
evaluation batches are resized and normalised here.
"""

from __future__ import annotations

import io

import cv2
import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from preprocess.media import decoder_options

from .augment import rrc_box
from .config import LoaderConfig


def decode_clip(data: np.ndarray, indices: np.ndarray, max_pixels: int | None = None) -> np.ndarray:
    """(len(indices), H, W, 3) uint8 RGB; decodes up to the last index needed and converts only
    the frames asked for (the RGB conversion costs more than decoding small clips). With
    ``max_pixels``, the decoder refuses a frame far larger (libavcodec's own check, before it
    allocates the frame; ``preprocess.media.decoder_options``)."""
    import av

    wanted = {int(i) for i in indices}
    frames: dict[int, np.ndarray] = {}
    count = 0
    try:
        with av.open(io.BytesIO(data.tobytes())) as container:
            if max_pixels is not None:
                container.streams.video[0].codec_context.options = decoder_options(max_pixels)
            for count, frame in enumerate(container.decode(video=0), 1):
                if count - 1 in wanted:
                    frames[count - 1] = frame.to_ndarray(format="rgb24")
                if count > max(wanted):
                    break
    except (av.error.FFmpegError, IndexError, OSError) as err:  # IndexError: no video stream
        raise ValueError(f"clip does not decode ({type(err).__name__}: {err})") from None
    if not count:
        raise ValueError("clip has no decodable frames")
    if max(wanted) >= count:  # the index promised more frames: damaged data is an error, never padded
        raise ValueError(f"clip decodes to {count} frames, frame {max(wanted)} was asked for (damaged or truncated)")
    return np.stack([frames[int(i)] for i in indices])


def decode_image(data: np.ndarray) -> np.ndarray:
    img = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError("image does not decode")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


class TorchTransforms:
    """Train: decoded frames -> uint8 at the output size (clips squashed; images resized and
    cropped, or a random-resized crop for MAE), for ``augment.BatchAugment``. Eval: the
    normalised float clip/image, as the DALI graphs give it.

    The training image crops are drawn from ``generator`` (the loader's, seeded per seed, epoch
    and rank), never from torch's global generator, by torchvision's rules: ``RandomCrop``'s
    position, and ``RandomResizedCrop``'s box through ``augment.rrc_box`` (the DALI graph's)."""

    def __init__(self, cfg: LoaderConfig, video: bool, stored_size: int, generator: torch.Generator | None = None) -> None:
        self.cfg = cfg
        self.video = video
        self.stored_size = stored_size
        self.generator = generator if generator is not None else torch.Generator()
        self.mean, self.std = torch.tensor(cfg.mean).view(3, 1, 1), torch.tensor(cfg.std).view(3, 1, 1)
        self.random_crop = cfg.train and not video
        bicubic = cfg.augment.rrc_interpolation == "bicubic"  # of the random-resized crop
        self.interpolation = v2.InterpolationMode.BICUBIC if bicubic else v2.InterpolationMode.BILINEAR

    def _geometric(self, x: torch.Tensor) -> torch.Tensor:
        """(..., H, W) -> (..., S, S): squashed (clips, evaluation), or a training image's crop."""
        S, aug, gen = self.cfg.size, self.cfg.augment, self.generator
        if not self.random_crop:
            return v2.functional.resize(x, [S, S], antialias=True)
        if aug.rrc:
            top, left, h, w = rrc_box(x.shape[-2], x.shape[-1], aug.rrc_scale, aug.rrc_ratio, gen)
            return v2.functional.resized_crop(x, top, left, h, w, [S, S], interpolation=self.interpolation, antialias=True)
        x = v2.functional.resize(x, self.cfg.image_resize, antialias=True)
        H, W = x.shape[-2:]
        top, left = (int(torch.randint(0, n - S + 1, (1,), generator=gen)) for n in (H, W))
        return v2.functional.crop(x, top, left, S, S)

    def __call__(self, frames_THWC: np.ndarray) -> torch.Tensor:
        """uint8 frames (T,H,W,3) or image (H,W,3) -> train: uint8 (T,S,S,3) / (S,S,3);
        eval: normalised (3,T,S,S) / (3,S,S)."""
        x = torch.from_numpy(np.ascontiguousarray(frames_THWC))
        if self.video:
            if self.cfg.crop is not None:
                top, left, h, w = self.cfg.crop
                x = x[:, top : top + h, left : left + w]
            x = tv_tensors.Video(x.permute(0, 3, 1, 2))
        else:
            x = tv_tensors.Image(x.permute(2, 0, 1))
        x = self._geometric(x).as_subclass(torch.Tensor)
        if self.cfg.train:
            return x.permute(0, 2, 3, 1).contiguous() if self.video else x.permute(1, 2, 0).contiguous()
        x = (x.float() / 255.0 - self.mean) / self.std
        return x.permute(1, 0, 2, 3).contiguous() if self.video else x
