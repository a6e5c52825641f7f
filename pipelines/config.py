"""Loader configuration: typed, self-validating, every augmentation switchable."""

from __future__ import annotations

from dataclasses import dataclass

from s4d.models.config import IMAGENET_MEAN, IMAGENET_STD


@dataclass(frozen=True)
class Augment:
    """DESIGN §4 defaults for video; ``image()`` gives the image recipe. 0 switches one off."""

    rand_n: int = 4  # RandAugment ops (same ops for every frame of a clip)
    rand_m: int = 7  # RandAugment magnitude
    rrc_scale: tuple[float, float] = (0.08, 1.0)  # random-resized crop area; (1, 1) = off
    rrc_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: float = 0.5
    erase: float = 0.25  # random erasing probability (one box for all frames)

    def __post_init__(self) -> None:
        if self.rand_n < 0 or not 0 <= self.rand_m <= 30:
            raise ValueError(f"augment.rand_n must be >= 0 and rand_m in 0..30, got {self.rand_n}, {self.rand_m}")
        for name in ("flip", "erase"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"augment.{name} must be a probability, got {getattr(self, name)}")
        if not 0 < self.rrc_scale[0] <= self.rrc_scale[1] <= 1:
            raise ValueError(f"augment.rrc_scale must satisfy 0 < lo <= hi <= 1, got {self.rrc_scale}")

    @staticmethod
    def image() -> "Augment":
        """AffectNet recipe: resize 192 -> random crop 160, flip, RandAugment m9 n2, erasing."""
        return Augment(rand_n=2, rand_m=9, rrc_scale=(1.0, 1.0), rrc_ratio=(1.0, 1.0))

    @staticmethod
    def off() -> "Augment":
        return Augment(rand_n=0, rand_m=0, rrc_scale=(1.0, 1.0), rrc_ratio=(1.0, 1.0), flip=0.0, erase=0.0)


@dataclass(frozen=True)
class LoaderConfig:
    batch_size: int = 16
    train: bool = True
    size: int = 160  # output side in pixels
    frames: int = 16
    stride: int = 4
    image_resize: int = 192  # images: shorter side resized to this, then a size x size crop
    crop: tuple[int, int, int, int] | None = None  # (top, left, height, width) applied first (VoxCeleb2)
    augment: Augment = Augment()
    seed: int = 0
    class_balanced: bool = False
    views: int = 1  # training clips: augmented views per decoded clip (MAE pre-training: 4)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    num_threads: int = 2

    def __post_init__(self) -> None:
        for name in ("batch_size", "size", "frames", "stride", "image_resize", "num_threads", "views"):
            if getattr(self, name) <= 0:
                raise ValueError(f"loader.{name} must be positive, got {getattr(self, name)}")
        if self.image_resize < self.size:
            raise ValueError(f"loader.image_resize ({self.image_resize}) must be >= loader.size ({self.size})")
