"""ONNX: a classifier exported with one head (``s4d export``), and run by onnxruntime.

The graph takes ``pixels`` (B, 3, T, H, W) for the video head or (B, 3, H, W) for the image
head, normalised as the loaders normalise, with a dynamic batch, and gives ``probs`` (B, C),
the softmax the test protocol averages. MoAE layers export through their dense path (every
expert on every token, weighted by its gate; ``models.moe``). The model's metadata
(``metadata_props["s4d"]``, JSON) carries what ``s4d predict`` needs without the checkpoint:
the task, class names, frames, input size, normalisation and the training ``input`` record.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "s4d-onnx/1"
META_KEY = "s4d"


def export_onnx(checkpoint: str | os.PathLike, out: str | os.PathLike, task: str = "video") -> Path:
    """Write ``out`` (.onnx) from ``checkpoint``'s ``task`` head; returns the path."""
    try:
        import onnx
        import onnxscript  # noqa: F401  (torch's exporter needs it)
    except ImportError:
        raise ValueError("s4d export needs onnx and onnxscript: pip install 's4d[onnx]'") from None
    import torch

    from pipelines.config import IMAGENET_MEAN, IMAGENET_STD

    from ..checkpoint import checkpoint_meta, load_classifier

    out = Path(out)
    if out.suffix != ".onnx":
        raise ValueError(f"--out {out}: use a .onnx file name")
    model = load_classifier(checkpoint).eval()
    if task not in model.head:
        raise ValueError(f"--task {task}: {checkpoint} has no {task} head (heads: {', '.join(sorted(model.head))})")
    names = tuple(model.config.class_names.get(task, ())) or tuple(f"class_{i}" for i in range(model.config.heads[task]))
    enc = model.config.encoder

    class Probs(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, pixels: torch.Tensor) -> torch.Tensor:
            return self.model(pixels, task=task).float().softmax(dim=-1)

    shape = (2, 3, enc.num_frames, enc.img_size, enc.img_size) if task == "video" else (2, 3, enc.img_size, enc.img_size)
    example = torch.randn(*shape)
    batch = torch.export.Dim("batch", min=1, max=4096)
    out.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        program = torch.onnx.export(Probs().eval(), (example,), input_names=["pixels"], output_names=["probs"],
                                    dynamic_shapes={"pixels": {0: batch}}, dynamo=True, verbose=False)
    tmp = out.with_name(out.name + ".tmp")
    program.save(str(tmp))
    graph = onnx.load(str(tmp))
    meta = {"format": FORMAT, "task": task, "classes": list(names), "frames": enc.num_frames, "size": enc.img_size,
            "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "input": checkpoint_meta(checkpoint).get("input") or {},
            "checkpoint": str(checkpoint)}
    graph.metadata_props.add(key=META_KEY, value=json.dumps(meta))
    onnx.save(graph, str(tmp))
    os.replace(tmp, out)
    return out


class OnnxClassifier:
    """An exported head on onnxruntime (CPU): ``probs(x)`` for a numpy batch."""

    def __init__(self, path: str | os.PathLike) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise ValueError("--onnx needs onnxruntime: pip install 's4d[onnx]'") from None
        self.path = Path(path)
        if not self.path.is_file():
            raise ValueError(f"{self.path}: no such ONNX file")
        try:
            self.session = ort.InferenceSession(str(self.path), providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own exception types on a bad file
            raise ValueError(f"{self.path}: not a readable ONNX model ({str(err).strip().splitlines()[0][:160]})") from None
        raw = self.session.get_modelmeta().custom_metadata_map.get(META_KEY)
        meta: dict[str, Any] = json.loads(raw) if raw else {}
        if meta.get("format") != FORMAT:
            raise ValueError(f"{self.path}: not exported by s4d export (no {META_KEY!r} metadata)")
        self.meta = meta
        self.task: str = meta["task"]
        self.classes: tuple[str, ...] = tuple(meta["classes"])
        self.frames: int = int(meta["frames"])
        self.size: int = int(meta["size"])
        self.input: dict[str, Any] = dict(meta.get("input") or {})

    def probs(self, x: np.ndarray) -> np.ndarray:
        """(B, 3, T, H, W) or (B, 3, H, W) float32 -> (B, C) probabilities."""
        return self.session.run(["probs"], {"pixels": np.ascontiguousarray(x, dtype=np.float32)})[0]
