"""Mixup / CutMix and label smoothing on a batch, on the device, after loading.

``timm.data.Mixup`` works on (B, C, H, W); a clip batch (B, C, T, H, W) is viewed as
(B, C*T, H, W), so one CutMix box and one mixing weight cover every frame of a clip.
"""

from __future__ import annotations

import torch
from timm.data import Mixup


class BatchMixer:
    def __init__(self, num_classes: int, mixup: float = 0.8, cutmix: float = 1.0, smoothing: float = 0.1) -> None:
        self.num_classes = num_classes
        self.smoothing = smoothing
        self.mix = Mixup(mixup_alpha=mixup, cutmix_alpha=cutmix, label_smoothing=smoothing, num_classes=num_classes) if (mixup or cutmix) else None

    def __call__(self, pixels: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns mixed pixels (same shape) and soft targets (B, num_classes). An odd-sized
        batch (timm mixes pairs) is only label-smoothed."""
        if self.mix is None or len(pixels) % 2:
            off = self.smoothing / self.num_classes
            soft = torch.full((len(labels), self.num_classes), off, device=labels.device)
            return pixels, soft.scatter_(1, labels.view(-1, 1), 1.0 - self.smoothing + off)
        shape = pixels.shape
        flat = pixels.reshape(shape[0], -1, *shape[-2:])
        mixed, soft = self.mix(flat, labels)
        return mixed.reshape(shape), soft
