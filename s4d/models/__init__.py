"""S4D models: the ViT/MoAE classifier, its baselines, and the MAE pre-training model.

Nothing here knows about data loading or training.
"""

from preprocess.errors import InputError

from .config import MAE_DECODERS, SIZES, VARIANTS, EncoderConfig, MAEConfig, ModelConfig, MoEConfig, model_config, moe_block_indices
from .mae import MAEOutput, Masks, PretrainMAE, patchify, random_masking
from .moe import MixtureOfExperts, MoEAux
from .pos_embed import sinusoid_table
from .vit import Classifier, ModelAux


def build_model(config: ModelConfig | str = "s4d", size: str = "base", **kwargs) -> Classifier:
    """``build_model("s4d", "base")`` or ``build_model(ModelConfig(...))``; keyword arguments go
    to ``model_config`` (class counts, expert placement, ``MoEConfig`` fields)."""
    if isinstance(config, str):
        config = model_config(config, size, **kwargs)
    elif kwargs:
        raise TypeError("keyword options apply only when config is a variant name")
    return Classifier(config)


def build_mae(size: str = "base", **kwargs) -> PretrainMAE:
    """The MAE pre-training model for an encoder size; keyword arguments are ``MAEConfig`` fields."""
    if size not in SIZES:
        raise InputError(f"unknown size {size!r}; choose one of {sorted(SIZES)}")
    return PretrainMAE(MAEConfig(encoder=SIZES[size], **{**MAE_DECODERS.get(size, {}), **kwargs}))


__all__ = [
    "SIZES",
    "VARIANTS",
    "Classifier",
    "EncoderConfig",
    "MAEConfig",
    "MAEOutput",
    "Masks",
    "MixtureOfExperts",
    "ModelAux",
    "ModelConfig",
    "MoEAux",
    "MoEConfig",
    "PretrainMAE",
    "build_mae",
    "build_model",
    "model_config",
    "moe_block_indices",
    "patchify",
    "random_masking",
    "sinusoid_table",
]
