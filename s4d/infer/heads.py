"""The classifier behind ``s4d predict``: a checkpoint's heads on a torch device, or one
exported head on onnxruntime (``--onnx``: no torch on the model path). Both answer the same
questions: which heads, their classes and names, the input geometry, the training ``input``
record, and the probabilities of a batch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..checkpoint import checkpoint_meta, load_classifier
from ..checkpoint.finite import check_finite
from ..checkpoint.format import sidecar
from ..runtime import autocast, autocast_dtype, to_device
from .onnx_checks import check_input_record


class TorchHeads:
    def __init__(self, checkpoint: str, device: torch.device) -> None:
        self.source = checkpoint
        self.device = device
        self.model = load_classifier(checkpoint).to(device).eval()
        self.amp = autocast_dtype("auto", device)  # bf16 on CUDA, as the model was trained
        enc = self.model.config.encoder
        self.size, self.frames = enc.img_size, enc.num_frames
        self.heads: dict[str, int] = dict(self.model.config.heads)
        self.class_names: dict[str, tuple[str, ...]] = {t: tuple(n) for t, n in self.model.config.class_names.items()}
        self.input: dict[str, Any] = checkpoint_meta(checkpoint).get("input") or {}
        check_input_record(
            sidecar(Path(checkpoint)),
            self.input or None,  # predict sizes its frames by it
            fix="the checkpoint's JSON config is damaged or edited: restore it beside its weights",
        )

    @torch.no_grad()
    def probs(self, x: torch.Tensor, task: str) -> np.ndarray:
        """A normalised batch (B, 3, T, H, W) / (B, 3, H, W) -> (B, C) softmax. One wait per
        batch, for the answer; the input goes up without one (``to_device``). A NaN or inf
        answer is refused (``check_finite``), checked on the host copy: no extra wait."""
        with autocast(self.device, self.amp):
            return check_finite(self.model(to_device(x, self.device), task).float().softmax(-1).cpu().numpy(), f"{self.source}: the {task} head")


class OnnxHeads:
    def __init__(self, path: str) -> None:
        from .onnx import OnnxClassifier

        self.source = path
        self.session = OnnxClassifier(path)
        self.size, self.frames = self.session.size, self.session.frames
        self.heads = {self.session.task: len(self.session.classes)}
        self.class_names = {self.session.task: self.session.classes}
        self.input = self.session.input

    def probs(self, x: torch.Tensor, task: str) -> np.ndarray:
        return check_finite(self.session.probs(x.numpy()), f"{self.source}: the {task} head")
