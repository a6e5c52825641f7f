"""Never a non-finite answer: damaged weights (ours, the authors', ONNX) are refused at load,
naming the file and the tensor; our files' recorded sha256 catches any other change; and a model
whose answers are NaN or inf stops predict, eval and export with one line naming the input."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import torch

from s4d import build_model, load_model, save_checkpoint
from s4d.checkpoint import CheckpointError, read_checkpoint
from tests.test_bad_inputs import one_error_line, pristine, raw, s4d  # noqa: F401  (fixtures)
from tests.test_predict import debug_checkpoint, demo_video

NAN = struct.pack("<f", float("nan"))


def tensor_offset(path, name: str) -> int:
    """The byte offset of tensor ``name``'s data inside a .safetensors file."""
    blob = path.read_bytes()
    n = struct.unpack("<Q", blob[:8])[0]
    header = json.loads(blob[8 : 8 + n])
    return 8 + n + header[name]["data_offsets"][0]


def poke(path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def test_a_nan_in_saved_weights_is_refused_naming_the_file_and_the_tensor(tmp_path):
    ckpt = debug_checkpoint(tmp_path)
    poke(ckpt, tensor_offset(ckpt, "head.video.bias") + 4, NAN)  # a few flipped bytes that read as NaN
    with pytest.raises(CheckpointError, match=r"tensor head\.video\.bias holds NaN or inf") as err:
        load_model(ckpt)
    assert str(ckpt) in str(err.value) and "\n" not in str(err.value)
    video, _ = demo_video(tmp_path, frames=8)
    rc, out, stderr = s4d("predict", video, "-c", ckpt, "--no-align")
    line = one_error_line(stderr)
    assert rc == 2 and str(ckpt) in line and "head.video.bias" in line and "calm" not in out


def test_changed_bytes_that_stay_finite_fail_the_recorded_digest(tmp_path):
    ckpt = debug_checkpoint(tmp_path)
    assert len(json.loads(ckpt.with_suffix(".json").read_text())["sha256"]) == 64
    load_model(ckpt)  # the file as saved loads
    poke(ckpt, tensor_offset(ckpt, "head.video.weight"), struct.pack("<f", 0.125))
    with pytest.raises(CheckpointError, match=r"has been modified or damaged since it was saved: sha256 \w+\.\.\. != recorded") as err:
        load_model(ckpt)
    assert str(err.value).startswith(str(ckpt))


def test_a_save_torn_between_its_two_renames_is_not_called_damage(tmp_path):
    ckpt = debug_checkpoint(tmp_path)
    old_sidecar = ckpt.with_suffix(".json").read_text()
    model = load_model(ckpt)
    with torch.no_grad():
        model.head["video"].bias.add_(1.0)
    save_checkpoint(model, ckpt)
    ckpt.with_suffix(".json").write_text(old_sidecar)  # new weights, the previous save's sidecar
    assert torch.equal(load_model(ckpt).head["video"].bias, model.head["video"].bias)


def test_a_checkpoint_without_a_digest_loads_as_before(tmp_path):
    ckpt = debug_checkpoint(tmp_path)
    meta = json.loads(ckpt.with_suffix(".json").read_text())
    del meta["sha256"]  # an older checkpoint
    ckpt.with_suffix(".json").write_text(json.dumps(meta))
    poke(ckpt, tensor_offset(ckpt, "head.video.weight"), struct.pack("<f", 0.125))
    assert load_model(ckpt).head["video"].weight.view(-1)[0].item() == 0.125


def test_a_nan_in_the_authors_file_is_refused_naming_the_tensor(tmp_path):
    state = build_model("s4d", "debug", video_classes=3).state_dict()
    state["fc_norm.weight"][1] = float("inf")
    torch.save({"model": state, "optimizer": {"best": torch.tensor(float("inf"))}}, tmp_path / "authors.pth")
    read_checkpoint(tmp_path / "authors.pth")  # what the model does not use is not judged
    with pytest.raises(CheckpointError, match=r"authors\.pth: tensor fc_norm\.weight holds NaN or inf"):
        load_model(tmp_path / "authors.pth")


def overflowing_checkpoint(tmp_path):
    """Finite weights whose answers overflow to NaN: nothing at load can see it."""
    ckpt = debug_checkpoint(tmp_path)
    model = load_model(ckpt)
    with torch.no_grad():
        model.head["video"].weight.fill_(3e38)
    return save_checkpoint(model, tmp_path / "overflow.safetensors", extra={"input": json.loads(ckpt.with_suffix(".json").read_text())["input"]})


def test_predict_and_export_stop_on_nan_answers_naming_the_input(tmp_path):
    ckpt = overflowing_checkpoint(tmp_path)
    video, _ = demo_video(tmp_path, frames=8)
    rc, out, err = s4d("predict", video, "-c", ckpt, "--no-align")
    line = one_error_line(err)
    assert rc == 2 and str(video) in line and "answered NaN or inf" in line and not out.strip()
    rc, _, err = s4d("export", "-c", ckpt, "-o", tmp_path / "m.onnx")
    line = one_error_line(err)
    assert rc == 2 and str(ckpt) in line and "NaN or inf" in line and not (tmp_path / "m.onnx").exists()


def test_eval_stops_on_nan_answers_naming_the_shard_and_the_sample(pristine, tmp_path):  # noqa: F811
    model = build_model("s4d", "debug", video_classes=2, image_classes=2)
    with torch.no_grad():
        model.head["video"].weight.fill_(3e38)
    ckpt = save_checkpoint(model, tmp_path / "overflow.safetensors")
    rc, _, err = s4d("eval", "-m", pristine / "manifest.json", "-c", ckpt, "--backend", "torch", "--out", tmp_path / "ev")
    line = one_error_line(err)
    assert rc == 2 and str(ckpt) in line and ".tar" in line and "first 'v" in line and "answered NaN or inf" in line
    assert not (tmp_path / "ev" / "summary.json").exists()
    rc, _, err = s4d("analyze", "order", "-m", pristine / "manifest.json", "-c", ckpt, "--backend", "torch", "--out", tmp_path / "an")
    assert rc == 2 and "answered NaN or inf" in one_error_line(err)
    with torch.no_grad():  # features that overflow, as the expert and relevance analyses read them
        model.head["video"].weight.fill_(0.01)
        model.fc_norm.weight.fill_(3e38)
    ckpt = save_checkpoint(model, tmp_path / "features.safetensors")
    rc, _, err = s4d("analyze", "experts", "-m", pristine / "manifest.json", "-c", ckpt, "--backend", "torch", "--out", tmp_path / "ex")
    line = one_error_line(err)
    assert rc == 2 and "the encoder answered NaN or inf" in line and "first 'v" in line


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from s4d.infer.onnx import export_onnx

    tmp = tmp_path_factory.mktemp("onnx")
    return export_onnx(debug_checkpoint(tmp), tmp / "m.onnx")


def _edit_initializer(source, target, edit):
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(source))
    init = next(i for i in model.graph.initializer if numpy_helper.to_array(i).dtype == np.float32 and i.dims)
    values = numpy_helper.to_array(init).copy()
    edit(values.reshape(-1))
    init.CopyFrom(numpy_helper.from_array(values, init.name))
    onnx.save(model, str(target))
    return init.name


def test_onnx_with_a_nan_initializer_or_changed_weights_is_refused(exported, tmp_path):
    from s4d.infer.onnx import META_KEY, OnnxClassifier

    head = OnnxClassifier(exported)
    assert len(head.meta["sha256"]) == 64  # the export records its digest
    name = _edit_initializer(exported, tmp_path / "nan.onnx", lambda v: v.__setitem__(0, np.nan))
    with pytest.raises(ValueError, match=rf"initializer {name} holds NaN or inf"):
        OnnxClassifier(tmp_path / "nan.onnx")
    _edit_initializer(exported, tmp_path / "changed.onnx", lambda v: v.__setitem__(0, v[0] + 0.5))
    with pytest.raises(ValueError, match=r"changed\.onnx: has been modified or damaged since s4d export wrote it"):
        OnnxClassifier(tmp_path / "changed.onnx")
    rc, _, err = s4d("predict", tmp_path / "clip.webm", "--onnx", tmp_path / "nan.onnx", "--no-align")
    assert rc == 2 and name in one_error_line(err)

    import onnx  # an export without a digest (older) still loads

    model = onnx.load(str(tmp_path / "changed.onnx"))
    meta = next(p for p in model.metadata_props if p.key == META_KEY)
    meta.value = json.dumps({k: v for k, v in json.loads(meta.value).items() if k != "sha256"})
    onnx.save(model, str(tmp_path / "old.onnx"))
    assert OnnxClassifier(tmp_path / "old.onnx").classes == head.classes
