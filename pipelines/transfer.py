"""Host-to-device copies that do not make the host wait."""

from __future__ import annotations

import torch


def to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``x`` onto ``device``. A host tensor going to a GPU is pinned first and copied
    ``non_blocking`` (from pageable memory the copy blocks the host). The pinned copy belongs to
    this call; torch's pinned-memory cache keeps its block from reuse until the copy has
    finished on the stream, so nothing can overwrite it mid-copy."""
    if device.type != "cuda" or x.device.type != "cpu":
        return x.to(device)
    return x.pin_memory().to(device, non_blocking=True)
