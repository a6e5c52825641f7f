"""Joint fine-tuning batches: single-source batches from the video (DFER) and image (SFER)
loaders, interleaved in a random order seeded by the epoch and identical on every rank.

Per epoch: every video batch, plus ``proportion`` x as many image batches as one pass over
the image data would give (drawn class-balanced with replacement when the image loader's
config says so).
"""

from __future__ import annotations

import math
from typing import Iterator

from preprocess.errors import InputError

from .loader import Loader
from .sampling import joint_schedule


class JointLoader:
    def __init__(self, video: Loader, image: Loader, proportion: float, seed: int = 0) -> None:
        if proportion < 0:
            raise InputError(f"proportion must be >= 0, got {proportion}")
        self.video, self.image, self.proportion, self.seed = video, image, proportion, seed
        per_pass = math.ceil(len(image.ds) / image.world / image.cfg.batch_size)
        self.num_image_batches = round(proportion * per_pass)
        # the image loader draws exactly the samples those batches need, on every rank
        image.num_samples = self.num_image_batches * image.cfg.batch_size * image.world

    def schedule(self, epoch: int) -> list[str]:
        return joint_schedule(len(self.video.batches(epoch)), self.num_image_batches, seed=self.seed, epoch=epoch)

    def epoch(self, epoch: int) -> Iterator[tuple[str, dict]]:
        """Yields ``(task, batch)`` with task "video" or "image"."""
        sources = {"video": self.video.epoch(epoch), "image": self.image.epoch(epoch)}
        for task in self.schedule(epoch):
            yield task, next(sources[task])
