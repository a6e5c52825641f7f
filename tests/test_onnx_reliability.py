"""``s4d export`` and ``s4d predict --onnx`` on bad input (issue 23, round 3): an untrained image
head is not exported, an ONNX file's declared sizes are checked before anything is sized by
them, an image model given a video is refused naming both, and an export into a folder writes
the file there and leaves no ``.tmp``. Every refusal is one line naming the file."""

import dataclasses
import json

import numpy as np
import pytest

pytest.importorskip("onnxruntime", reason="the onnx extra (pip install 's4d[onnx]') is not installed")
pytest.importorskip("onnxscript", reason="the onnx extra (pip install 's4d[onnx]') is not installed")

import onnx  # noqa: E402
from onnx import TensorProto, helper  # noqa: E402

from preprocess.errors import InputError  # noqa: E402
from s4d import build_model, save_checkpoint  # noqa: E402
from s4d.infer import PredictConfig, Predictor  # noqa: E402
from s4d.infer.onnx import OnnxClassifier, export_onnx  # noqa: E402
from s4d.infer.onnx_checks import FORMAT, MAX_SIZE, META_KEY  # noqa: E402
from tests.media_factory import write_image  # noqa: E402
from tests.test_bad_inputs import one_error_line, s4d  # noqa: E402
from tests.test_predict import NAMES, debug_checkpoint, demo_video  # noqa: E402


def no_sfer_checkpoint(folder):
    """Saved as ``s4d train --no-sfer`` saves: class names for the video head only (the image
    head exists, with 7 classes, and was never trained)."""
    model = build_model("s4d", "debug", video_classes=3, image_classes=7)
    model.config = dataclasses.replace(model.config, class_names={"video": NAMES})
    return save_checkpoint(model, folder / "nosfer.safetensors")


def no_tmp_left(folder) -> bool:
    return not [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


# ----------------------------------------------------------------------------- item 1: untrained image head


def test_export_refuses_the_image_head_of_a_no_sfer_model(tmp_path):
    ckpt = no_sfer_checkpoint(tmp_path)
    rc, out, err = s4d("export", "-c", ckpt, "-o", tmp_path / "img.onnx", "--task", "image")
    line = one_error_line(err)
    assert rc == 2 and str(ckpt) in line and "never trained" in line and "--task video" in line, err
    assert not (tmp_path / "img.onnx").exists() and no_tmp_left(tmp_path)


def test_export_reads_sfer_false_in_the_run_config_beside_the_checkpoint(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    ckpt = debug_checkpoint(run / "checkpoints")  # names for both heads, yet the run says sfer: false
    (run / "config.json").write_text(json.dumps({"sfer": False, "manifest": "dfew.json"}))
    with pytest.raises(InputError, match="image head was never trained.*--task video") as err:
        export_onnx(ckpt, tmp_path / "img.onnx", "image")
    assert str(ckpt) in str(err.value) and not (tmp_path / "img.onnx").exists() and no_tmp_left(tmp_path)
    (run / "config.json").write_text(json.dumps({"sfer": True}))  # the same checkpoint of a joint run exports
    assert OnnxClassifier(export_onnx(ckpt, tmp_path / "img.onnx", "image")).classes == NAMES


# ----------------------------------------------------------------------------- item 2: declared sizes


def tiny_onnx(path, *, meta=None, task="video", dims=None, classes=3, raw=None):
    """A hand-made ONNX model: the mean colour of ``pixels`` (B, 3, ...) as ``probs`` (B, 3),
    with ``meta`` (merged into a valid video record) as its s4d metadata; ``dims`` fixes the
    input's non-batch dims, ``raw`` replaces the metadata text."""
    rank = 5 if task == "video" else 4
    shape = ["B"] + list(dims or [3] + ["T"] * (rank == 5) + ["H", "W"])
    nodes = [
        helper.make_node("ReduceMean", ["pixels"], ["m"], axes=list(range(2, rank)), keepdims=0),
        helper.make_node("Softmax", ["m"], ["probs"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["B", classes])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    record = {
        "format": FORMAT,
        "task": task,
        "classes": list(NAMES),
        "frames": 4,
        "size": 64,
        "input": {"stride": 2, "fps": 25.0, "crop": None, "align": False, "margin": 0.25, "stored_size": 64},
        **(meta or {}),
    }
    model.metadata_props.add(key=META_KEY, value=raw if raw is not None else json.dumps(record))
    onnx.save(model, str(path))
    return path


def test_a_tiny_valid_model_loads(tmp_path):  # the control: the cases below fail for their one defect
    head = OnnxClassifier(tiny_onnx(tmp_path / "ok.onnx"))
    assert head.size == 64 and head.frames == 4 and head.classes == NAMES
    assert head.probs(np.zeros((2, 3, 4, 64, 64), np.float32)).shape == (2, 3)


BAD_METADATA = {
    "size-8000": (dict(meta={"size": 8000}), f"metadata size is 8000, must be a whole number from 1 to {MAX_SIZE}"),
    "frames-huge": (dict(meta={"frames": 10**6}), "metadata frames is 1000000"),
    "size-not-int": (dict(meta={"size": "64"}), "metadata size is '64'"),
    "task": (dict(meta={"task": "audio"}), "metadata task is 'audio', must be video or image"),
    "classes-many": (dict(meta={"classes": [f"c{i}" for i in range(5000)]}), "metadata classes is '5000 names'"),
    "classes-empty": (dict(meta={"classes": []}), "must be a list of 1 to 1000 names"),
    "stored-size": (dict(meta={"input": {"stored_size": 100000}}), "metadata input.stored_size is 100000"),
    "stride": (dict(meta={"input": {"stride": 0}}), "metadata input.stride is 0"),
    "crop": (dict(meta={"input": {"stored_size": 64, "crop": [0, 0, 9999, 10]}}), "metadata input.crop is [0, 0, 9999, 10]"),
    "fps-nan": (dict(meta={"input": {"fps": float("nan")}}), "metadata input.fps is nan"),
    "not-json": (dict(raw="{not json"), "metadata is not valid JSON"),
    "other-format": (dict(raw=json.dumps({"format": "x"})), "not exported by s4d export"),
    "graph-size": (dict(dims=[3, 4, 32, 32]), "the graph takes pixels (?, 3, 4, 32, 32) but its metadata says a video model of (B, 3, 4, 64, 64)"),
    "graph-rank": (dict(task="image", meta={"task": "video"}), "the graph takes pixels (?, 3, ?, ?) but its metadata says a video model"),
    "graph-classes": (dict(classes=5), "probs output is not (B, 3)"),
}


@pytest.mark.parametrize("case", list(BAD_METADATA))
def test_bad_onnx_metadata_is_refused_before_anything_is_sized(tmp_path, case):
    kwargs, expected = BAD_METADATA[case]
    path = tiny_onnx(tmp_path / "bad.onnx", **kwargs)
    with pytest.raises(InputError) as err:
        OnnxClassifier(path)
    text = str(err.value)
    assert "\n" not in text and text.startswith(f"{path}: ") and expected in text, text


def test_predict_refuses_a_427_byte_model_that_declares_size_8000(tmp_path):
    path = tiny_onnx(tmp_path / "big.onnx", meta={"size": 8000})
    assert path.stat().st_size < 1000
    rc, out, err = s4d("predict", tmp_path / "any.webm", "--onnx", path, "--no-align")
    line = one_error_line(err)
    assert rc == 2 and str(path) in line and "size is 8000" in line and str(MAX_SIZE) in line and "no flag" in line, err


# ----------------------------------------------------------------------------- item 3: an image model and a video


@pytest.fixture(scope="module")
def image_model(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("image_onnx")
    return export_onnx(debug_checkpoint(tmp), tmp / "image.onnx", "image")


def test_an_image_model_refuses_a_video_naming_both_and_still_answers_images(image_model, tmp_path):
    video, clip = demo_video(tmp_path, frames=8)
    rc, out, err = s4d("predict", video, "--onnx", image_model, "--no-align")
    line = one_error_line(err)
    assert rc == 2 and str(video) in line and str(image_model) in line and "is an image model" in line, err
    assert "--task video" in line and "please report" not in line
    photo = write_image(tmp_path / "face.png", clip[0])
    result = Predictor(PredictConfig(None, align=False, onnx=str(image_model)))(photo)
    assert result["head"] == "image" and result["prediction"]["class"] in NAMES


# ----------------------------------------------------------------------------- item 4: --out a folder, no .tmp


def test_export_into_a_folder_writes_the_file_there_and_leaves_no_tmp(tmp_path):
    ckpt = debug_checkpoint(tmp_path)
    folder = tmp_path / "exports"
    folder.mkdir()
    rc, out, err = s4d("export", "-c", ckpt, "-o", folder)
    assert rc == 0, err
    written = folder / "model_video.onnx"
    assert f"wrote {written}" in out and sorted(p.name for p in folder.iterdir()) == ["model_video.onnx"]
    assert OnnxClassifier(written).task == "video" and no_tmp_left(tmp_path)


def test_export_refuses_a_planted_symlink_and_writes_nothing_through_it(tmp_path):
    ckpt = debug_checkpoint(tmp_path)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (tmp_path / "m.onnx.tmp").symlink_to(victim)
    with pytest.raises(InputError, match=r"m\.onnx\.tmp is a symbolic link"):
        export_onnx(ckpt, tmp_path / "m.onnx")
    (tmp_path / "link.onnx").symlink_to(victim)
    with pytest.raises(InputError, match=r"link\.onnx is a symbolic link"):
        export_onnx(ckpt, tmp_path / "link.onnx")
    assert victim.read_text() == "keep me" and not (tmp_path / "m.onnx").exists()


def test_an_initializer_in_another_file_is_refused_not_read(tmp_path):
    path = tiny_onnx(tmp_path / "ext.onnx")
    model = onnx.load(str(path))
    weights = helper.make_tensor("w", TensorProto.FLOAT, [4], [1.0, 2.0, 3.0, 4.0])
    weights.ClearField("float_data")
    weights.data_location = TensorProto.EXTERNAL
    weights.external_data.add(key="location", value="../../etc/passwd")
    model.graph.initializer.append(weights)
    onnx.save(model, str(path))
    with pytest.raises(InputError, match=r"ext\.onnx: initializer w is stored in another file \(external data\)"):
        OnnxClassifier(path)
