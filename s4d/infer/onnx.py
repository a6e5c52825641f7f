"""ONNX: a classifier exported with one head (``s4d export``), and run by onnxruntime.

The graph takes ``pixels`` (B, 3, T, H, W) for the video head or (B, 3, H, W) for the image
head, normalised as the loaders normalise, with a dynamic batch, and gives ``probs`` (B, C),
the softmax the test protocol averages. MoAE layers export through their dense path (every
expert on every token, weighted by its gate; ``models.moe``). The model's metadata
(``metadata_props["s4d"]``, JSON) carries what ``s4d predict`` needs without the checkpoint:
the task, class names, frames, input size, normalisation and the training ``input`` record,
and ``sha256``: a digest of the initializers (``initializer_digest``) that loading checks, as it
checks that every floating initializer is finite.
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
    from ..checkpoint.finite import NonFiniteOutput

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
        if not bool(torch.isfinite(Probs().eval()(example)).all()):  # finite weights can still overflow
            raise NonFiniteOutput(f"{checkpoint}: the {task} head answers NaN or inf on a test input; not exported")
        program = torch.onnx.export(Probs().eval(), (example,), input_names=["pixels"], output_names=["probs"],
                                    dynamic_shapes={"pixels": {0: batch}}, dynamo=True, verbose=False)
    tmp = out.with_name(out.name + ".tmp")
    program.save(str(tmp))
    graph = onnx.load(str(tmp))
    meta = {"format": FORMAT, "task": task, "classes": list(names), "frames": enc.num_frames, "size": enc.img_size,
            "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "input": checkpoint_meta(checkpoint).get("input") or {},
            "checkpoint": str(checkpoint), "sha256": initializer_digest(graph)}
    graph.metadata_props.add(key=META_KEY, value=json.dumps(meta))
    onnx.save(graph, str(tmp))
    os.replace(tmp, out)
    return out


def initializer_digest(model) -> str:
    """sha256 over every initializer's name, type, shape and values, in name order."""
    import hashlib

    from onnx import numpy_helper

    h = hashlib.sha256()
    for init in sorted(model.graph.initializer, key=lambda i: i.name):
        h.update(f"{init.name}\0{init.data_type}\0{tuple(init.dims)}\0".encode())
        h.update(init.raw_data if init.raw_data else np.ascontiguousarray(numpy_helper.to_array(init)).tobytes())
    return h.hexdigest()


def check_initializers(path: Path, recorded: str | None) -> None:
    """Every floating initializer finite (the first that is not is named) and, where the export
    recorded one, the initializers' digest unchanged. External data is not followed (onnxruntime
    has refused it before this runs)."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise ValueError("--onnx needs onnx to check the model's weights: pip install 's4d[onnx]'") from None
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # protobuf's decode errors
        raise ValueError(f"{path}: not a readable ONNX model ({str(err).strip().splitlines()[0][:160]})") from None
    for init in model.graph.initializer:
        values = numpy_helper.to_array(init)
        if values.dtype.kind in "fc" and values.size and not np.isfinite(values).all():
            raise ValueError(f"{path}: initializer {init.name} holds NaN or inf values: the model file is damaged; "
                             "export it again (s4d export)")
    if recorded is not None:
        actual = initializer_digest(model)
        if actual != recorded:
            raise ValueError(f"{path}: has been modified or damaged since s4d export wrote it: sha256 {actual[:16]}... != "
                             f"recorded {str(recorded)[:16]}...; export it again (s4d export)")


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
        check_initializers(self.path, meta.get("sha256"))
        self.meta = meta
        self.task: str = meta["task"]
        self.classes: tuple[str, ...] = tuple(meta["classes"])
        self.frames: int = int(meta["frames"])
        self.size: int = int(meta["size"])
        self.input: dict[str, Any] = dict(meta.get("input") or {})

    def probs(self, x: np.ndarray) -> np.ndarray:
        """(B, 3, T, H, W) or (B, 3, H, W) float32 -> (B, C) probabilities (the caller checks
        they are finite, ``heads``)."""
        return self.session.run(["probs"], {"pixels": np.ascontiguousarray(x, dtype=np.float32)})[0]
