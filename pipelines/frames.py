"""Still images cut from video shards: one random frame per clip, for pre-training with a video
dataset's frames in place of the still-image datasets (the paper's Table IV #5, "VoxCeleb2
frames as the images").

A ``FrameLoader`` is a video ``Loader`` whose clips are one frame long (``frames=1, stride=1``):
the plan's training start (``sampling.train_start``, seeded by (seed, epoch, rank) like every
clip start) is then a uniformly drawn frame of the clip, either backend decodes just that frame
(the source's ``crop`` applied, squashed to the output size), the clip augmentation applies the
image recipe it is given (``Augment.mae_image``: random-resized crop (0.2, 1), bicubic, flip)
and the time axis is dropped: batches are images, ``pixels`` (B, 3, S, S), as an image loader's.
The one difference from a stored still: the crop is taken from the frame squashed to S x S, not
from the stored (larger) image.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator

from preprocess.errors import InputError

from .config import LoaderConfig
from .dataset import ShardDataset
from .loader import Loader


class FrameLoader(Loader):
    def __init__(self, ds: ShardDataset, cfg: LoaderConfig, **kw) -> None:
        if ds.modality != "video":
            raise InputError(f"{ds.manifest.source or ds.manifest.name}: frames are drawn from video shards; this dataset holds {ds.modality}s")
        if not cfg.train:
            raise InputError("frames are a pre-training source: the loader config must have train=True")
        super().__init__(ds, dataclasses.replace(cfg, frames=1, stride=1, views=1), **kw)

    def epoch(self, epoch: int) -> Iterator[dict]:
        """Batches of ``pixels`` (B, 3, S, S), ``labels`` (B,), ``keys`` (the clips')."""
        for batch in super().epoch(epoch):
            yield {**batch, "pixels": batch["pixels"][:, :, 0]}  # (B, 3, 1, S, S) -> (B, 3, S, S)
