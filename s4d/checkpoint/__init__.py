"""Checkpoints: our safetensors + JSON format, and the authors' layouts mapped onto ours."""

from .io import LoadReport, checkpoint_meta, init_from_pretrained, load_model, read_checkpoint, save_checkpoint
from .keymap import CheckpointError, NativeState, to_native, to_reference

__all__ = [
    "CheckpointError",
    "LoadReport",
    "checkpoint_meta",
    "NativeState",
    "init_from_pretrained",
    "load_model",
    "read_checkpoint",
    "save_checkpoint",
    "to_native",
    "to_reference",
]
