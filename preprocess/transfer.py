"""Host-to-device copies that do not make the host wait (MTCNN's frames, the augmentation's
arguments, eval and predict batches, the loaders' pageable sources)."""

from __future__ import annotations

import torch


def to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``x`` onto ``device``. A host tensor going to a GPU is copied into a fresh pinned buffer,
    then up ``non_blocking`` (from pageable memory the copy would block the host). Always a fresh
    buffer, never ``x`` itself even when it is pinned: ``x`` may be a loader's buffer (DALI pins
    the CPU outputs of GPU pipelines) that is reused once released, while the fresh one comes
    from torch's pinned-memory cache, which keeps the block until the copy has run."""
    if device.type != "cuda" or x.device.type != "cpu":
        return x.to(device)
    staged = torch.empty(x.shape, dtype=x.dtype, pin_memory=True).copy_(x)
    return staged.to(device, non_blocking=True)
