import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from s4d import build_mae, build_model, load_model, save_checkpoint
from s4d.checkpoint import CheckpointError, init_from_pretrained, to_native, to_reference
from s4d.cli import app
from s4d.models import EncoderConfig, ModelConfig, sinusoid_table

from . import reference_impl as ref

X = torch.randn(2, 3, 4, 64, 64)
IMG = torch.randn(2, 3, 64, 64)
# Foreign files do not store heads / size / frames: tell the loader the debug geometry.
DEBUG_OPTS = dict(num_heads=2, img_size=64, num_frames=4)


class Opaque:  # an arbitrary Python object a training script might pickle
    pass


def reference_finetuned(model, wrap="model", prefix=""):
    """A state dict as the authors' fine-tuning code saves it."""
    sd = {prefix + k: v.clone() for k, v in to_reference(model.state_dict()).items()}
    return {wrap: sd, "epoch": 99} if wrap else sd


def reference_pretrain(mae, with_tables=True):
    sd = {k: v.clone() for k, v in mae.state_dict().items()}
    if with_tables:  # some releases store the fixed tables; they must equal ours
        sd["encoder.pos_embed"] = sinusoid_table(32, 32)[None]
        sd["decoder.pos_embed"] = sinusoid_table(32, 384)[None]
    return {"model": sd, "optimizer": {"state": {}}, "epoch": 100}


def test_native_reference_round_trip_is_exact():
    model = build_model("s4d", "debug")
    sd = model.state_dict()
    reference = to_reference(sd)
    assert "blocks.3.moe_layer.experts.7.fc1.weight" in reference
    assert reference["blocks.3.moe_layer.experts.7.fc1.weight"].shape == (8, 32)  # (hidden, dim)
    assert "blocks.3.moe_layer.router.topkroute_linear.weight" in reference
    assert "blocks.3.moe_layer.router.noise_linear.bias" in reference
    back = to_native({"module": {f"module.{k}": v for k, v in reference.items()}})
    assert back.kind == "classifier" and back.tensors.keys() == sd.keys()
    for k in sd:
        assert torch.equal(back.tensors[k], sd[k]), k


def test_our_checkpoint_round_trip(tmp_path):
    model = build_model("s4d", "debug", video_classes=3).eval()
    path = save_checkpoint(model, tmp_path / "m.safetensors")
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["config"]["kind"] == "classifier" and meta["config"]["heads"]["video"] == 3
    loaded = load_model(path)
    assert loaded.config == model.config and not loaded.training
    torch.testing.assert_close(loaded(X), model(X), atol=0, rtol=0)
    mae = build_mae("debug").eval()
    loaded_mae = load_model(save_checkpoint(mae, tmp_path / "mae.safetensors"))
    masks = mae.mask_for(X, torch.Generator().manual_seed(0))
    torch.testing.assert_close(loaded_mae(X, masks=masks).loss, mae(X, masks=masks).loss, atol=0, rtol=0)


@pytest.mark.parametrize("wrap, prefix", [("model", ""), ("module", "module."), (None, "")])
def test_authors_finetuned_state_dict_loads_and_matches_reference_forward(tmp_path, wrap, prefix):
    original = build_model("s4d", "debug", video_classes=11).eval()
    raw = reference_finetuned(original, wrap, prefix)
    torch.save(raw, tmp_path / "s4d_mafw.pth")
    model, report = load_model(tmp_path / "s4d_mafw.pth", with_report=True, **DEBUG_OPTS)
    assert report.kind == "classifier" and not report.new and not report.unused
    assert model.config.heads == {"video": 11, "image": 7} and model.config.moae.blocks == (2, 3)
    sd = raw[wrap] if wrap else raw
    sd = {k[len(prefix) :]: v for k, v in sd.items()}
    for x, task in ((X, "video"), (IMG, "image")):
        expected = ref.classifier_forward(sd, x, depth=4, num_heads=2, task=task, num_tokens=32)
        torch.testing.assert_close(model(x, task=task), expected, atol=1e-5, rtol=1e-5)


def test_authors_pretraining_checkpoint_loads_as_mae(tmp_path):
    original = build_mae("debug").eval()
    torch.save(reference_pretrain(original), tmp_path / "vit_base_voxceleb2+affectnet_100.pt")
    mae, report = load_model(tmp_path / "vit_base_voxceleb2+affectnet_100.pt", with_report=True, **DEBUG_OPTS)
    assert report.kind == "mae" and report.dropped == ["decoder.pos_embed", "encoder.pos_embed"]
    masks = original.mask_for(X, torch.Generator().manual_seed(0))
    torch.testing.assert_close(mae(X, masks=masks).loss, original(X, masks=masks).loss, atol=0, rtol=0)


def test_learned_position_table_is_refused(tmp_path):
    raw = reference_pretrain(build_mae("debug"))
    raw["model"]["encoder.pos_embed"] = torch.randn(1, 32, 32)
    torch.save(raw, tmp_path / "learned.pt")
    with pytest.raises(CheckpointError, match="encoder.pos_embed is not the fixed sinusoid table"):
        load_model(tmp_path / "learned.pt", **DEBUG_OPTS)


def test_finetuning_model_initialised_from_pretraining(tmp_path):
    mae = build_mae("debug")
    torch.save(reference_pretrain(mae), tmp_path / "pre.pt")
    model = build_model("s4d", "debug", video_classes=11)
    report = init_from_pretrained(model, tmp_path / "pre.pt")
    assert torch.equal(model.blocks[1].attn.qkv.weight, mae.encoder.blocks[1].attn.qkv.weight)
    assert torch.equal(model.patch_embed.proj.weight, mae.encoder.patch_embed.proj.weight)
    assert {"fc_norm.weight", "head.video.weight", "head.image.bias", "blocks.3.moae.experts.w1"} <= set(report.new)
    assert not any(k.startswith(("blocks.0.attn", "patch_embed")) for k in report.new)
    assert {"encoder.norm.weight", "decoder.head.weight", "mask_token", "encoder_to_decoder.weight"} <= set(report.unused)
    assert "new" in report.summary()
    # target="classifier" does the same from load_model
    clf, rep = load_model(tmp_path / "pre.pt", target="classifier", with_report=True, **DEBUG_OPTS)
    assert torch.equal(clf.blocks[2].mlp.fc2.weight, mae.encoder.blocks[2].mlp.fc2.weight)
    assert clf.config.moae.blocks == (2, 3) and "blocks.3.moae.experts.w1" in rep.new  # S4D by default


def test_our_mae_checkpoint_as_classifier_keeps_its_geometry(tmp_path):
    mae = build_mae("debug")
    path = save_checkpoint(mae, tmp_path / "mae.safetensors")
    clf = load_model(path, target="classifier")
    assert clf.config.encoder == mae.config.encoder  # 64 px, 4 frames, 2 heads from the sidecar
    assert torch.equal(clf.blocks[0].attn.qkv.weight, mae.encoder.blocks[0].attn.qkv.weight)
    with pytest.raises(CheckpointError, match="config is a ModelConfig but this load builds a PretrainMAE"):
        load_model(path, config=clf.config)


def test_position_table_of_another_geometry_is_refused(tmp_path):
    raw = reference_pretrain(build_mae("debug"))
    raw["model"]["encoder.pos_embed"] = sinusoid_table(64, 32)[None]  # as for 8 frames
    torch.save(raw, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="encoder.pos_embed has 64 rows but 64 px x 4 frames gives 32 tokens"):
        load_model(tmp_path / "other.pt", **DEBUG_OPTS)


def test_training_script_checkpoint_with_args_loads(tmp_path):
    import argparse

    model = build_model("s4d", "debug", video_classes=7).eval()
    raw = reference_finetuned(model)
    raw["args"] = argparse.Namespace(lr=4e-5, model="vit_base")
    torch.save(raw, tmp_path / "with_args.pth")
    torch.testing.assert_close(load_model(tmp_path / "with_args.pth", **DEBUG_OPTS)(X), model(X), atol=0, rtol=0)

    torch.save({"model": raw["model"], "thing": Opaque()}, tmp_path / "opaque.pth")
    with pytest.raises(CheckpointError, match="opaque.pth: holds a Python object that safe loading refuses"):
        load_model(tmp_path / "opaque.pth")


@pytest.mark.parametrize("drop_block, message", [(3, None), (1, r"no tensors for blocks \[1\]")])
def test_missing_blocks_are_not_a_shallower_model(tmp_path, drop_block, message):
    model = build_model("vit-mtl", "debug")
    raw = reference_finetuned(model)
    raw["model"] = {k: v for k, v in raw["model"].items() if not k.startswith(f"blocks.{drop_block}.")}
    torch.save(raw, tmp_path / "holes.pth")
    if message:
        with pytest.raises(CheckpointError, match=message):
            load_model(tmp_path / "holes.pth", **DEBUG_OPTS)
    else:  # the last block missing cannot be told from a shallower model by shape alone ...
        assert load_model(tmp_path / "holes.pth", **DEBUG_OPTS).config.encoder.depth == 3
        # ... but a pre-training source with blocks the model lacks is refused
        deeper = build_mae("debug")
        torch.save(reference_pretrain(deeper, with_tables=False), tmp_path / "pre.pt")
        shallow = build_model(ModelConfig(encoder=EncoderConfig(img_size=64, num_frames=4, dim=32, depth=3, num_heads=2)))
        with pytest.raises(CheckpointError, match="pre.pt: source has encoder tensors the model has no place for: blocks.3"):
            init_from_pretrained(shallow, tmp_path / "pre.pt")


def test_videomae_style_encoder_and_single_head(tmp_path):
    vit = build_model("vit", "debug", video_classes=5)
    enc_only = {f"encoder.{k}": v for k, v in vit.state_dict().items() if not k.startswith(("head", "fc_norm"))}
    enc_only["encoder.norm.weight"] = torch.ones(32)
    enc_only["encoder.norm.bias"] = torch.zeros(32)
    torch.save({"model": enc_only}, tmp_path / "videomae_enc.pth")
    model, report = load_model(tmp_path / "videomae_enc.pth", with_report=True, **DEBUG_OPTS)
    assert report.kind == "encoder" and "head.video.weight" in report.new and "norm.weight" in report.unused
    assert torch.equal(model.blocks[0].attn.qkv.weight, vit.blocks[0].attn.qkv.weight)

    single = {k.replace("head.video.", "head."): v for k, v in vit.state_dict().items()}
    torch.save({"module": single}, tmp_path / "videomae_ft.pth")
    ft = load_model(tmp_path / "videomae_ft.pth", **DEBUG_OPTS)
    assert ft.config.heads == {"video": 5}
    torch.testing.assert_close(ft(X), vit.eval()(X), atol=0, rtol=0)


def test_loads_that_would_be_silently_wrong_are_refused(tmp_path):
    model = build_model("s4d", "debug", video_classes=7)
    torch.save(reference_finetuned(model), tmp_path / "ft.pth")
    wrong_classes = build_model("s4d", "debug", video_classes=11).config
    with pytest.raises(CheckpointError, match="head.video.weight: 7 classes .* expects 11"):
        load_model(tmp_path / "ft.pth", config=wrong_classes)
    raw = reference_finetuned(model)
    raw["model"]["blocks.1.attn.qkv.weight"] = torch.randn(96, 16)
    torch.save(raw, tmp_path / "bad_shape.pth")
    with pytest.raises(CheckpointError, match=r"blocks.1.attn.qkv.weight has shape \(96, 16\)"):
        load_model(tmp_path / "bad_shape.pth", config=model.config)
    raw = reference_finetuned(model)
    del raw["model"]["blocks.2.norm1.weight"]
    raw["model"]["blocks.2.extra.weight"] = torch.zeros(1)
    torch.save(raw, tmp_path / "holes.pth")
    with pytest.raises(CheckpointError, match="missing blocks.2.norm1.weight; unexpected blocks.2.extra.weight"):
        load_model(tmp_path / "holes.pth", config=model.config)
    loose, report = load_model(tmp_path / "holes.pth", config=model.config, strict=False, with_report=True)
    assert report.new == ["blocks.2.norm1.weight"] and report.unused == ["blocks.2.extra.weight"]
    del raw["model"]["blocks.3.moe_layer.experts.3.fc2.bias"]
    torch.save(raw, tmp_path / "expert_hole.pth")
    with pytest.raises(CheckpointError, match="missing fc2 tensor of expert 3"):
        load_model(tmp_path / "expert_hole.pth")


def test_import_checkpoint_cli(tmp_path):
    model = build_model("s4d", "debug", video_classes=11).eval()
    torch.save(reference_finetuned(model), tmp_path / "ft.pth")
    runner = CliRunner()
    out = tmp_path / "ours.safetensors"
    res = runner.invoke(
        app, ["import-checkpoint", str(tmp_path / "ft.pth"), "-o", str(out), "--num-heads", "2", "--img-size", "64", "--num-frames", "4"]
    )
    assert res.exit_code == 0, res.output
    assert "classifier checkpoint" in res.output and out.is_file() and out.with_suffix(".json").is_file()
    torch.testing.assert_close(load_model(out)(X), model(X), atol=0, rtol=0)


def test_import_pretraining_checkpoint_cli(tmp_path):
    mae = build_mae("debug").eval()
    torch.save(reference_pretrain(mae), tmp_path / "pre.pt")
    out = tmp_path / "pre.safetensors"
    res = CliRunner().invoke(
        app, ["import-checkpoint", str(tmp_path / "pre.pt"), "-o", str(out), "--num-heads", "2", "--img-size", "64", "--num-frames", "4"]
    )
    assert res.exit_code == 0, res.output
    assert "mae checkpoint" in res.output
    masks = mae.mask_for(X, torch.Generator().manual_seed(0))
    torch.testing.assert_close(load_model(out)(X, masks=masks).loss, mae(X, masks=masks).loss, atol=0, rtol=0)


def test_errors_name_the_file(tmp_path):
    torch.save({"a": 1}, tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match=r"plain.pt: no state dict of tensors found"):
        load_model(tmp_path / "plain.pt")
    torch.save({"model": {"x.weight": torch.zeros(1)}}, tmp_path / "odd.pt")
    with pytest.raises(CheckpointError, match=r"odd.pt: no patch_embed.proj.weight"):
        load_model(tmp_path / "odd.pt")


@pytest.mark.parametrize("content", [b"this is not a checkpoint\n", "truncate"])
def test_import_checkpoint_bad_file_is_one_clear_line(tmp_path, content):
    bad = tmp_path / "bad.pth"
    if content == "truncate":
        torch.save(reference_finetuned(build_model("s4d", "debug")), bad)
        bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    else:
        bad.write_bytes(content)
    res = subprocess.run(
        [sys.executable, "-m", "s4d", "import-checkpoint", str(bad), "-o", str(tmp_path / "o.safetensors")],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 2
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and str(bad) in lines[0] and "not a readable PyTorch checkpoint" in lines[0], res.stderr
    assert "Traceback" not in res.stderr and not (tmp_path / "o.safetensors").exists()


def test_cli_help_and_missing_file(tmp_path):
    console_script = Path(sys.executable).with_name("s4d")  # installed by pyproject [project.scripts]
    assert console_script.is_file(), "the s4d command is not installed next to this Python"
    res = subprocess.run([str(console_script), "--help"], capture_output=True, text=True)
    assert res.returncode == 0 and "import-checkpoint" in res.stdout
    res = subprocess.run([sys.executable, "-m", "s4d", "import-checkpoint", "--help"], capture_output=True, text=True)
    assert res.returncode == 0 and "--num-heads" in res.stdout and "safetensors" in res.stdout
    res = CliRunner().invoke(app, ["import-checkpoint", str(tmp_path / "nope.pt"), "-o", str(tmp_path / "o.safetensors")])
    assert res.exit_code == 2 and "no such checkpoint file" in res.output
