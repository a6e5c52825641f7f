"""Loader configuration: typed, self-validating, every augmentation switchable."""

from __future__ import annotations

from dataclasses import dataclass

from preprocess.errors import InputError

from .randaug import RandAugmentSpec

# Pixel normalisation of every loader output (ImageNet's, as the reference); the MAE's target
# un-normalisation (``s4d.models.MAEConfig``) reads these.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Augment:
    """Training augmentation, the reference's recipe by default (DESIGN §4). Clips, in this
    order: RandAugment (same ops for every frame) -> random-resized crop -> flip -> normalise ->
    erasing. Images: resize + random crop (in the decoder) -> flip -> RandAugment -> erasing ->
    normalise. ``randaugment`` is timm's notation (``None`` = off); 0 switches the rest off."""

    randaugment: str | None = "rand-m7-n4-mstd0.5-inc1"
    rrc_scale: tuple[float, float] = (0.08, 1.0)  # random-resized crop area; (1, 1) = off
    rrc_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    rrc_interpolation: str = "bilinear"  # or "bicubic" (MAE images)
    flip: float = 0.5
    erase: float = 0.25  # random erasing probability (one box for all frames)
    erase_mode: str = "pixel"  # "pixel": N(0,1) noise after normalisation; "zero": 0 before normalisation

    def __post_init__(self) -> None:
        if self.randaugment is not None:
            RandAugmentSpec.parse(self.randaugment)  # raises naming the bad part
        for name in ("flip", "erase"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise InputError(f"augment.{name} must be a probability, got {getattr(self, name)}")
        if not 0 < self.rrc_scale[0] <= self.rrc_scale[1] <= 1:
            raise InputError(f"augment.rrc_scale must satisfy 0 < lo <= hi <= 1, got {self.rrc_scale}")
        if not 0 < self.rrc_ratio[0] <= self.rrc_ratio[1]:
            raise InputError(f"augment.rrc_ratio must satisfy 0 < lo <= hi, got {self.rrc_ratio}")
        if self.rrc_interpolation not in ("bilinear", "bicubic"):
            raise InputError(f"augment.rrc_interpolation must be bilinear or bicubic, got {self.rrc_interpolation!r}")
        if self.erase_mode not in ("pixel", "zero"):
            raise InputError(f"augment.erase_mode must be pixel or zero, got {self.erase_mode!r}")

    @property
    def rrc(self) -> bool:
        return self.rrc_scale != (1.0, 1.0) or self.rrc_ratio != (1.0, 1.0)

    @property
    def active(self) -> bool:
        return self.randaugment is not None or self.rrc or self.flip > 0 or self.erase > 0

    @staticmethod
    def image() -> "Augment":
        """AffectNet fine-tuning: resize 192 -> random crop 160, flip, RandAugment m9 n2,
        erasing 0.25 with 0 before normalisation."""
        return Augment(randaugment="rand-m9-n2-mstd0.5-inc1", rrc_scale=(1.0, 1.0), rrc_ratio=(1.0, 1.0), erase_mode="zero")

    @staticmethod
    def mae_video() -> "Augment":
        """MAE pre-training clips: random-resized crop (0.08, 1), no flip, nothing else."""
        return Augment(randaugment=None, flip=0.0, erase=0.0)

    @staticmethod
    def mae_image() -> "Augment":
        """MAE pre-training images: random-resized crop (0.2, 1), bicubic, flip."""
        return Augment(randaugment=None, rrc_scale=(0.2, 1.0), rrc_interpolation="bicubic", erase=0.0)

    @staticmethod
    def off() -> "Augment":
        return Augment(randaugment=None, rrc_scale=(1.0, 1.0), rrc_ratio=(1.0, 1.0), flip=0.0, erase=0.0)


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
    random_clip: bool = False  # evaluation: one random clip per video, seeded per epoch (the reference's per-epoch check)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    num_threads: int | None = None  # DALI worker threads; None: the cores per rank (loader.default_threads)

    def __post_init__(self) -> None:
        for name in ("batch_size", "size", "frames", "stride", "image_resize", "views"):
            if getattr(self, name) <= 0:
                raise InputError(f"loader.{name} must be positive, got {getattr(self, name)}")
        if self.num_threads is not None and self.num_threads <= 0:
            raise InputError(f"loader.num_threads must be positive, got {self.num_threads}")
        if self.image_resize < self.size:
            raise InputError(f"loader.image_resize ({self.image_resize}) must be >= loader.size ({self.size})")
