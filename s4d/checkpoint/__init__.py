"""Checkpoints: our safetensors + JSON format (``format``), the authors' layouts mapped onto ours
(``keymap``), configs inferred from tensor shapes (``infer``) and loading (``load``)."""

from .format import checkpoint_meta, read_checkpoint, save_checkpoint
from .keymap import CheckpointError, NativeState, to_native, to_reference
from .load import LoadReport, init_from_pretrained, load_classifier, load_model

__all__ = [
    "CheckpointError",
    "LoadReport",
    "checkpoint_meta",
    "NativeState",
    "init_from_pretrained",
    "load_classifier",
    "load_model",
    "read_checkpoint",
    "save_checkpoint",
    "to_native",
    "to_reference",
]
