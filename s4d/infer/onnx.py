"""ONNX: a classifier exported with one head (``s4d export``), and run by onnxruntime.

The graph takes ``pixels`` (B, 3, T, H, W) for the video head or (B, 3, H, W) for the image
head, normalised as the loaders normalise, with a dynamic batch, and gives ``probs`` (B, C),
the softmax the test protocol averages. MoAE layers export through their dense path (every
expert on every token, weighted by its gate; ``models.moe``). The model's metadata
(``metadata_props["s4d"]``, JSON) carries what ``s4d predict`` needs without the checkpoint:
the task, class names, frames, input size, normalisation and the training ``input`` record,
and ``sha256``: a digest of the initializers (``initializer_digest``) that loading checks, as it
checks that every floating initializer is finite.

Loading reads the file with ``onnx`` first (no external data: an export is one file) and checks
the metadata's declared sizes and the graph's input shape against the limits below before
onnxruntime builds a session or ``predict`` sizes a buffer by them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from preprocess.errors import InputError
from preprocess.safe_io import refuse_symlink

from .onnx_checks import FORMAT, META_KEY, _first_line, check_initializers, initializer_digest, load_model_proto, read_metadata


def export_onnx(checkpoint: str | os.PathLike, out: str | os.PathLike, task: str = "video") -> Path:
    """Write ``out`` (.onnx; an existing folder: ``out/<checkpoint stem>_<task>.onnx``) from
    ``checkpoint``'s ``task`` head; returns the path. The file appears whole or not at all: the
    ``.tmp`` it is built in is removed on any failure."""
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401  (torch's exporter needs it)
    except ImportError:
        raise InputError("s4d export needs onnx and onnxscript: pip install 's4d[onnx]'") from None
    from ..checkpoint import load_classifier

    out = export_path(checkpoint, out, task)
    model = load_classifier(checkpoint).eval()
    if task not in model.head:
        raise InputError(f"--task {task}: {checkpoint} has no {task} head (heads: {', '.join(sorted(model.head))})")
    check_head_trained(checkpoint, model, task)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = refuse_symlink(out.with_name(out.name + ".tmp"))
    try:
        _write_onnx(checkpoint, model, task, tmp)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)  # after a failure; after success it is already gone
    return out


def export_path(checkpoint: str | os.PathLike, out: str | os.PathLike, task: str) -> Path:
    """``--out`` as the file to write: a .onnx name, or an existing folder to write
    ``<checkpoint stem>_<task>.onnx`` into (as ``cp FILE DIR/`` would). A symbolic link at the
    file is refused (the replace would not follow it, but a user who planted one meant a target)."""
    out = Path(out)
    if out.is_dir():
        out = out / f"{Path(str(checkpoint)).stem}_{task}.onnx"
        if out.is_dir():
            raise InputError(f"--out {out}: is a folder; give a .onnx file name")
    elif out.suffix != ".onnx":
        raise InputError(f"--out {out}: use a .onnx file name (or an existing folder to write into)")
    return refuse_symlink(out)


def check_head_trained(checkpoint: str | os.PathLike, model, task: str) -> None:
    """Refuse the image head of a model trained without still images (``--no-sfer``): s4d
    records class names only for the heads it trained, and the run's ``config.json`` beside
    ``checkpoints/`` says ``sfer: false``. A foreign file (no names for any head) is not judged."""
    names = model.config.class_names
    untrained = task == "image" and bool(names.get("video")) and not names.get("image")
    run_config = _run_config(Path(str(checkpoint)))
    if task == "image" and run_config.get("sfer") is False:
        untrained = True
    if untrained:
        raise InputError(
            f"{checkpoint}: the image head was never trained (the model was trained with --no-sfer: no "
            "class names for it, config sfer: false); export the video head (--task video), which "
            "s4d predict also uses for still images"
        )


def _run_config(checkpoint: Path) -> dict[str, Any]:
    """The training config recorded beside a checkpoint: ``RUN/config.json`` for
    ``RUN/checkpoints/NAME.safetensors``, ``FOLDER/training_config.json`` for an ``s4d
    export-hub`` folder; ``{}`` where there is none (or it is not a JSON object)."""
    candidates = [checkpoint.parent / "training_config.json"]
    if checkpoint.parent.name == "checkpoints":
        candidates.insert(0, checkpoint.parent.parent / "config.json")
    for path in candidates:
        if path.is_file() and not path.is_symlink():
            try:
                config = json.loads(path.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError, OSError) as err:
                raise InputError(
                    f"{path}: not a readable run config ({_first_line(err)}); restore it, or copy the "
                    "checkpoint (with its .json) out of the run folder to export it without"
                ) from None
            return config if isinstance(config, dict) else {}
    return {}


def _write_onnx(checkpoint: str | os.PathLike, model, task: str, tmp: Path) -> None:
    """Export ``model``'s ``task`` head to ``tmp`` with its metadata (see the module docstring)."""
    import onnx
    import torch

    from pipelines.config import IMAGENET_MEAN, IMAGENET_STD

    from ..checkpoint import checkpoint_meta
    from ..checkpoint.finite import NonFiniteOutput

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
    with torch.no_grad():
        if not bool(torch.isfinite(Probs().eval()(example)).all()):  # finite weights can still overflow
            raise NonFiniteOutput(f"{checkpoint}: the {task} head answers NaN or inf on a test input; not exported")
        program = torch.onnx.export(
            Probs().eval(),
            (example,),
            input_names=["pixels"],
            output_names=["probs"],
            dynamic_shapes={"pixels": {0: batch}},
            dynamo=True,
            verbose=False,
        )
    program.save(str(tmp))
    graph = onnx.load(str(tmp))
    meta = {
        "format": FORMAT,
        "task": task,
        "classes": list(names),
        "frames": enc.num_frames,
        "size": enc.img_size,
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "input": checkpoint_meta(checkpoint).get("input") or {},
        "checkpoint": str(checkpoint),
        "sha256": initializer_digest(graph),
    }
    graph.metadata_props.add(key=META_KEY, value=json.dumps(meta))
    onnx.save(graph, str(tmp))


class OnnxClassifier:
    """An exported head on onnxruntime (CPU): ``probs(x)`` for a numpy batch."""

    def __init__(self, path: str | os.PathLike) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise InputError("--onnx needs onnxruntime: pip install 's4d[onnx]'") from None
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(f"{self.path}: no such ONNX file")
        proto = load_model_proto(self.path)
        meta = read_metadata(self.path, proto)  # sizes checked before anything is allocated by them
        check_initializers(self.path, meta.get("sha256"), proto)
        del proto
        try:
            self.session = ort.InferenceSession(str(self.path), providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own exception types on a bad file
            raise InputError(f"{self.path}: not a readable ONNX model ({_first_line(err)})") from None
        self.meta = meta
        self.task: str = meta["task"]
        self.classes: tuple[str, ...] = tuple(meta["classes"])
        self.frames: int = meta["frames"]
        self.size: int = meta["size"]
        self.input: dict[str, Any] = dict(meta.get("input") or {})

    def probs(self, x: np.ndarray) -> np.ndarray:
        """(B, 3, T, H, W) or (B, 3, H, W) float32 -> (B, C) probabilities (the caller checks
        they are finite, ``heads``)."""
        return self.session.run(["probs"], {"pixels": np.ascontiguousarray(x, dtype=np.float32)})[0]
