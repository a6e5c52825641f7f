"""Where a run executes: device choice, autocast and matmul precision (``device``). Every
command (train, pretrain, eval, analyze, predict, doctor) resolves its device here, once."""

from preprocess.transfer import to_device

from .device import autocast, autocast_dtype, dali_device_id, resolve_device

__all__ = ["autocast", "autocast_dtype", "dali_device_id", "resolve_device", "to_device"]
