"""Typed, self-validating configuration of every model in S4D.

Sizes and variants are data (``SIZES``, ``VARIANTS``); ``model_config`` combines them.
Every config round-trips through JSON (``to_dict`` / ``from_dict``) so a checkpoint's
sidecar file rebuilds its model exactly.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from pipelines.config import IMAGENET_MEAN, IMAGENET_STD  # the loaders' normalisation, owned by pipelines
from preprocess.errors import InputError

NoiseKind = Literal["learned", "fixed", "none"]
Placement = Literal["early", "middle", "later", "alternate"]


def _positive(name: str, value: float) -> None:
    if value <= 0:
        raise InputError(f"{name} must be positive, got {value!r}")


@dataclass(frozen=True)
class EncoderConfig:
    """A ViT over tubelets. ``img_size``/``num_frames`` fix the token grid (and the length of
    the fixed sinusoid table); images use the first ``tokens_per_frame_pair`` rows."""

    img_size: int = 160
    num_frames: int = 16
    tubelet: int = 2
    patch: int = 16
    in_chans: int = 3
    dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    ln_eps: float = 1e-6
    qkv_bias: bool = True
    drop_path: float = 0.0

    def __post_init__(self) -> None:
        for name in ("img_size", "num_frames", "tubelet", "patch", "in_chans", "dim", "depth", "num_heads"):
            _positive(f"encoder.{name}", getattr(self, name))
        _positive("encoder.mlp_ratio", self.mlp_ratio)
        if self.img_size % self.patch:
            raise InputError(f"encoder.img_size ({self.img_size}) must be a multiple of encoder.patch ({self.patch})")
        if self.num_frames % self.tubelet:
            raise InputError(f"encoder.num_frames ({self.num_frames}) must be a multiple of encoder.tubelet ({self.tubelet})")
        if self.dim % self.num_heads:
            raise InputError(f"encoder.dim ({self.dim}) must be divisible by encoder.num_heads ({self.num_heads})")
        if not 0.0 <= self.drop_path < 1.0:
            raise InputError(f"encoder.drop_path must be in [0, 1), got {self.drop_path}")

    @property
    def grid(self) -> tuple[int, int, int]:
        """Token grid (t, h, w) of a full clip."""
        side = self.img_size // self.patch
        return self.num_frames // self.tubelet, side, side

    @property
    def num_tokens(self) -> int:
        t, h, w = self.grid
        return t * h * w

    @property
    def tokens_per_frame_pair(self) -> int:
        """Tokens of one tubelet slice: what an image (replicated to ``tubelet`` frames) yields."""
        _, h, w = self.grid
        return h * w

    @property
    def patch_pixels(self) -> int:
        """Values in one flattened tubelet patch: tubelet * patch * patch * channels."""
        return self.tubelet * self.patch * self.patch * self.in_chans


def moe_block_indices(depth: int, count: int, position: Placement = "later") -> tuple[int, ...]:
    """Which blocks carry experts, as in the paper's Table VIII.

    ``later`` = the last ``count`` blocks (the S4D default: blocks 6..11 of 12), ``early`` = the
    first ``count``, ``middle`` = ``count`` centred blocks, ``alternate`` = every other block
    ending at the last one (1, 3, ..., 11 for 6 of 12).
    """
    if not 0 < count <= depth:
        raise InputError(f"moe block count must be in 1..{depth}, got {count}")
    if position == "later":
        return tuple(range(depth - count, depth))
    if position == "early":
        return tuple(range(count))
    if position == "middle":
        start = (depth - count) // 2
        return tuple(range(start, start + count))
    if position == "alternate":
        if 2 * count - 1 > depth:
            raise InputError(f"alternate placement of {count} blocks needs depth >= {2 * count - 1}, got {depth}")
        return tuple(sorted(depth - 1 - 2 * i for i in range(count)))
    raise InputError(f"moe position must be early|middle|later|alternate, got {position!r}")


@dataclass(frozen=True)
class MoEConfig:
    """A noisy top-k mixture of MLP experts (d -> hidden -> d).

    Used beside the FFN as MoAE (``hidden_ratio`` 0.25: bottleneck adapters) or in place of
    the FFN for the ViT-MoE baseline (``hidden_ratio`` 4.0). Defaults are ours; the reference
    code's behaviour is ``noise_at_eval=True, capacity_factor=1.0``.
    """

    blocks: tuple[int, ...] = (6, 7, 8, 9, 10, 11)
    num_experts: int = 8
    top_k: int = 2
    hidden_ratio: float = 0.25
    noise: NoiseKind = "learned"
    noise_std: float = 1.0
    noise_at_eval: bool = False
    expert_residual: bool = False
    capacity_factor: float | None = None
    balance_loss_weight: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "blocks", tuple(int(b) for b in self.blocks))
        _positive("moe.num_experts", self.num_experts)
        if not 0 < self.top_k <= self.num_experts:
            raise InputError(f"moe.top_k must be in 1..num_experts ({self.num_experts}), got {self.top_k}")
        _positive("moe.hidden_ratio", self.hidden_ratio)
        if self.noise not in ("learned", "fixed", "none"):
            raise InputError(f"moe.noise must be learned|fixed|none, got {self.noise!r}")
        if self.noise_std < 0:
            raise InputError(f"moe.noise_std must be >= 0, got {self.noise_std}")
        if self.capacity_factor is not None:
            _positive("moe.capacity_factor", self.capacity_factor)
        if self.balance_loss_weight < 0:
            raise InputError(f"moe.balance_loss_weight must be >= 0, got {self.balance_loss_weight}")
        if len(set(self.blocks)) != len(self.blocks) or any(b < 0 for b in self.blocks):
            raise InputError(f"moe.blocks must be distinct non-negative indices, got {self.blocks}")

    def hidden_dim(self, dim: int) -> int:
        return int(dim * self.hidden_ratio)


@dataclass(frozen=True)
class ModelConfig:
    """A classifier: encoder, optional experts, one linear head per task.

    ``heads`` maps task name ("video", "image") to its class count; ``class_names`` (optional)
    gives the ordered names per task, index = label.
    """

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    heads: dict[str, int] = field(default_factory=lambda: {"video": 7, "image": 7})
    moae: MoEConfig | None = None
    moe_ffn: MoEConfig | None = None
    head_dropout: float = 0.0
    class_names: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.heads:
            raise InputError("heads must name at least one task, e.g. {'video': 7}")
        for task, n in self.heads.items():
            if n <= 0:
                raise InputError(f"heads.{task} must be a positive class count, got {n}")
        for name, moe in (("moae", self.moae), ("moe_ffn", self.moe_ffn)):
            if moe is not None and any(b >= self.encoder.depth for b in moe.blocks):
                raise InputError(f"{name}.blocks {moe.blocks} out of range for encoder.depth {self.encoder.depth}")
        for task, names in self.class_names.items():
            if task not in self.heads:
                raise InputError(f"class_names.{task}: no head named {task!r} (heads: {sorted(self.heads)})")
            if len(names) != self.heads[task]:
                raise InputError(f"class_names.{task} has {len(names)} names but heads.{task} is {self.heads[task]}")
        object.__setattr__(self, "class_names", {k: tuple(v) for k, v in self.class_names.items()})
        if not 0.0 <= self.head_dropout < 1.0:
            raise InputError(f"head_dropout must be in [0, 1), got {self.head_dropout}")

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "classifier", **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        d = {k: v for k, v in d.items() if k != "kind"}
        _reject_unknown(cls, d, "model config")
        enc = EncoderConfig(**_checked(EncoderConfig, d.pop("encoder", {}), "encoder"))
        moae = d.pop("moae", None)
        moe_ffn = d.pop("moe_ffn", None)
        return cls(
            encoder=enc,
            moae=MoEConfig(**_checked(MoEConfig, moae, "moae")) if moae else None,
            moe_ffn=MoEConfig(**_checked(MoEConfig, moe_ffn, "moe_ffn")) if moe_ffn else None,
            **d,
        )


@dataclass(frozen=True)
class MAEConfig:
    """Dual-modal MAE pre-training: encoder + a narrow decoder predicting masked patches."""

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    decoder_dim: int = 384
    decoder_depth: int = 4
    decoder_heads: int = 6
    mask_ratio_video: float = 0.95
    mask_ratio_image: float = 0.90
    norm_target: bool = True
    target_eps: float = 1e-6
    pixel_mean: tuple[float, float, float] = IMAGENET_MEAN
    pixel_std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        for name in ("decoder_dim", "decoder_depth", "decoder_heads"):
            _positive(name, getattr(self, name))
        if self.decoder_dim % self.decoder_heads:
            raise InputError(f"decoder_dim ({self.decoder_dim}) must be divisible by decoder_heads ({self.decoder_heads})")
        for name in ("mask_ratio_video", "mask_ratio_image"):
            r = getattr(self, name)
            if not 0.0 <= r < 1.0:
                raise InputError(f"{name} must be in [0, 1), got {r}")
        object.__setattr__(self, "pixel_mean", tuple(self.pixel_mean))
        object.__setattr__(self, "pixel_std", tuple(self.pixel_std))

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "mae", **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "MAEConfig":
        d = {k: v for k, v in d.items() if k != "kind"}
        _reject_unknown(cls, d, "mae config")
        enc = EncoderConfig(**_checked(EncoderConfig, d.pop("encoder", {}), "encoder"))
        return cls(encoder=enc, **d)


def _reject_unknown(cls: type, d: dict[str, Any], where: str) -> None:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise InputError(f"{where}: unknown field(s) {unknown}")


def _checked(cls: type, d: dict[str, Any], where: str) -> dict[str, Any]:
    _reject_unknown(cls, d, where)
    return d


# Sizes as data. ``debug`` is tiny (tests); ``base`` is ViT-B/16 at 160 px and 16 frames.
SIZES: dict[str, EncoderConfig] = {
    "debug": EncoderConfig(img_size=64, num_frames=4, dim=32, depth=4, num_heads=2),
    # the demo: small enough to train on 2 CPU cores in minutes, fine enough (8 px patches) to see a mouth
    "demo": EncoderConfig(img_size=64, num_frames=8, patch=8, dim=64, depth=4, num_heads=4),
    "small": EncoderConfig(dim=384, depth=12, num_heads=6),
    "base": EncoderConfig(),
}

# MAE decoders that differ from the paper's (384 wide, 4 deep): the demo's 64-wide encoder would
# spend most of its pre-training time in a decoder six times its width.
MAE_DECODERS: dict[str, dict[str, int]] = {"demo": {"decoder_dim": 64, "decoder_depth": 2, "decoder_heads": 4}}

VARIANTS = ("s4d", "vit", "vit-mtl", "vit-moe")


def model_config(
    variant: str = "s4d",
    size: str = "base",
    *,
    video_classes: int = 7,
    image_classes: int = 7,
    moe_count: int | None = None,
    moe_position: Placement = "later",
    **moe_options: Any,
) -> ModelConfig:
    """The paper's models as data.

    - ``s4d``: two heads, MoAE (8 bottleneck experts, top-2) beside the FFN of the later half.
    - ``vit``: plain ViT, one ``video`` head.
    - ``vit-mtl``: two heads, no experts.
    - ``vit-moe``: two heads, the FFN of the later half replaced by 8 FFN experts (top-2).

    ``moe_count``/``moe_position`` choose the expert blocks (default: half the depth, later);
    other keyword arguments are ``MoEConfig`` fields.
    """
    if size not in SIZES:
        raise InputError(f"unknown size {size!r}; choose one of {sorted(SIZES)}")
    if variant not in VARIANTS:
        raise InputError(f"unknown variant {variant!r}; choose one of {list(VARIANTS)}")
    enc = SIZES[size]
    count = moe_count if moe_count is not None else enc.depth // 2
    blocks = moe_block_indices(enc.depth, count, moe_position)
    two_heads = {"video": video_classes, "image": image_classes}
    if variant == "vit":
        return ModelConfig(encoder=enc, heads={"video": video_classes})
    if variant == "vit-mtl":
        return ModelConfig(encoder=enc, heads=two_heads)
    if variant == "vit-moe":
        opts = {"hidden_ratio": enc.mlp_ratio, **moe_options}
        return ModelConfig(encoder=enc, heads=two_heads, moe_ffn=MoEConfig(blocks=blocks, **opts))
    return ModelConfig(encoder=enc, heads=two_heads, moae=MoEConfig(blocks=blocks, **moe_options))
