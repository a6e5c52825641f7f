"""``s4d export``: a head as ONNX, run by onnxruntime with the probabilities torch gives, and
``s4d predict --onnx`` giving the checkpoint's answers without it."""

import dataclasses
import json

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime", reason="the onnx extra (pip install 's4d[onnx]') is not installed")
pytest.importorskip("onnxscript", reason="the onnx extra (pip install 's4d[onnx]') is not installed")

from s4d import build_model, save_checkpoint  # noqa: E402
from s4d.infer import PredictConfig, Predictor  # noqa: E402
from s4d.infer.onnx import OnnxClassifier, export_onnx  # noqa: E402
from tests.test_bad_inputs import one_error_line, s4d  # noqa: E402
from tests.test_predict import NAMES, debug_checkpoint, demo_video  # noqa: E402


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A debug S4D (two MoAE layers) with weights far from their init, so every expert matters."""
    torch.manual_seed(3)
    model = build_model("s4d", "debug", video_classes=3, image_classes=4)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    model.config = dataclasses.replace(model.config, class_names={"video": NAMES, "image": ("w", "x", "y", "z")})
    path = tmp_path_factory.mktemp("export") / "model.safetensors"
    save_checkpoint(model, path, extra={"input": {"stride": 2, "fps": 25.0, "crop": None, "align": False, "margin": 0.25, "stored_size": 64}})
    return path, model.eval()


@pytest.mark.parametrize("task", ["video", "image"])
def test_onnxruntime_gives_torchs_probabilities_for_any_batch(checkpoint, tmp_path, task):
    path, model = checkpoint
    onnx_path = export_onnx(path, tmp_path / f"{task}.onnx", task)
    head = OnnxClassifier(onnx_path)
    enc = model.config.encoder
    assert model.config.moae is not None and head.task == task
    assert head.classes == tuple(model.config.class_names[task]) and head.frames == enc.num_frames and head.size == enc.img_size
    assert head.input["stride"] == 2 and head.input["fps"] == 25.0  # predict prepares frames as training did
    for batch in (1, 5):  # the batch axis is dynamic
        shape = (batch, 3, enc.num_frames, enc.img_size, enc.img_size) if task == "video" else (batch, 3, enc.img_size, enc.img_size)
        x = torch.randn(*shape, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            expected = model(x, task=task).softmax(-1).numpy()
        got = head.probs(x.numpy())
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() <= 1e-4
        assert batch == 1 or np.abs(expected - expected.mean(0)).max() > 1e-3  # the inputs do move the answer


def test_predict_with_onnx_gives_the_checkpoints_windows(tmp_path):
    ckpt = debug_checkpoint(tmp_path, stride=2)
    video, _ = demo_video(tmp_path, frames=40)
    onnx_path = export_onnx(ckpt, tmp_path / "video.onnx", "video")
    by_torch = Predictor(PredictConfig(str(ckpt), align=False, hop=4))(video)
    predictor = Predictor(PredictConfig(None, align=False, hop=4, onnx=str(onnx_path)))
    assert not hasattr(predictor.heads, "model")  # no torch module on the model path
    by_onnx = predictor(video)
    assert [w["start_frame"] for w in by_onnx["windows"]] == [w["start_frame"] for w in by_torch["windows"]]
    for a, b in zip(by_onnx["windows"], by_torch["windows"]):
        assert a["top"] == b["top"] and max(abs(a["probs"][c] - b["probs"][c]) for c in NAMES) <= 1e-4
    assert by_onnx["prediction"]["class"] == by_torch["prediction"]["class"]


def test_export_and_predict_onnx_from_the_command_line(tmp_path):
    ckpt = debug_checkpoint(tmp_path)
    video, _ = demo_video(tmp_path, frames=24)
    rc, out, err = s4d("export", "-c", ckpt, "-o", tmp_path / "m.onnx")
    assert rc == 0 and "video head" in out, err
    rc, out, err = s4d("predict", video, "--onnx", tmp_path / "m.onnx", "--no-align", "--out", tmp_path / "r.json")
    assert rc == 0, err
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["checkpoint"] == str(tmp_path / "m.onnx") and result["prediction"]["class"] in NAMES
    rc, _, err = s4d("export", "-c", ckpt, "-o", tmp_path / "m.pt")
    assert rc == 2 and "use a .onnx file name" in one_error_line(err)
    rc, _, err = s4d("predict", video, "--no-align")
    assert rc == 2 and "exactly one of --checkpoint and --onnx" in one_error_line(err)
