"""``s4d analyze attention`` (Fig. 6): last-layer mean-token attention of our checkpoints and of
the authors' layout, over videos and images, one model or S4D above a baseline."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from s4d import build_mae, build_model, save_checkpoint
from s4d.analysis.attention import mean_token_attention, positive_part
from s4d.checkpoint import to_reference
from s4d.cli import app
from s4d.demo.faces import make_clip, make_image
from s4d.models import Classifier
from s4d.models.config import EncoderConfig, ModelConfig, MoEConfig
from tests.media_factory import write_image, write_video

from .test_bad_inputs import one_error_line, s4d


def _ours(path, seed: int):
    torch.manual_seed(seed)
    return save_checkpoint(build_model("s4d", "debug", video_classes=3, image_classes=3), path)


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("attention")
    video = write_video(root / "clip.webm", make_clip("surprise", np.random.default_rng(0), frames=12, size=64))
    image = write_image(root / "face.jpg", make_image("sad", np.random.default_rng(1), size=72))
    return root, video, image, _ours(root / "a.safetensors", 0), _ours(root / "b.safetensors", 1)


def run(*args):
    res = CliRunner().invoke(app, [*map(str, args)])
    assert res.exit_code == 0, res.output
    return res.output


def test_maps_are_the_last_layers_mean_token_attention():
    model = build_model("s4d", "debug", video_classes=3, image_classes=3).eval()
    x, img = torch.randn(2, 3, 4, 64, 64), torch.randn(2, 3, 64, 64)
    maps, probs = mean_token_attention(model, x)
    assert maps.shape == (2, 2, 4, 4) and probs.shape == (2, 3)  # (B, T'=4/2, 64/16, 64/16)
    np.testing.assert_allclose(maps.sum(axis=(1, 2, 3)), 1.0, rtol=1e-5)
    torch.testing.assert_close(torch.from_numpy(probs), model(x).softmax(-1))  # the hook changes nothing
    assert mean_token_attention(model, img)[0].shape == (2, 4, 4)
    assert len(model.blocks[-1]._forward_pre_hooks) == 0  # removed after use
    with torch.no_grad():  # q = 0 everywhere: every query attends uniformly
        model.blocks[-1].attn.qkv.weight[:32].zero_()
        model.blocks[-1].attn.q_bias.zero_()
    np.testing.assert_allclose(mean_token_attention(model, x)[0], 1 / 32, rtol=1e-5)
    assert not positive_part(np.full((2, 4, 4), 1 / 32)).any()


def test_video_and_image_with_a_baseline_row(media, tmp_path):
    root, video, image, a, b = media
    out = tmp_path / "att"
    text = run("analyze", "attention", "-c", a, "-c", b, video, image, "--no-align", "--out", out, "--device", "cpu")
    assert "mean-token" in text
    index = json.loads((out / "attention.json").read_text())
    assert [m["label"] for m in index["models"]] == ["S4D", "baseline"]
    v, v_base = np.load(out / "attention_clip.npy"), np.load(out / "attention_clip.baseline.npy")
    i, i_base = np.load(out / "attention_face.npy"), np.load(out / "attention_face.baseline.npy")
    assert v.shape == v_base.shape == (2, 4, 4) and i.shape == i_base.shape == (4, 4)
    assert not np.allclose(v, v_base) and not np.allclose(i, i_base)  # two different models look differently
    for png in ("attention_clip.png", "attention_face.png"):
        assert 1_000 < (out / png).stat().st_size < 1_000_000
        w, h = Image.open(out / png).size
        assert w <= 4000 and h <= 4000 and w * h <= 4_000_000
    # the same checkpoint twice: the same maps in both rows
    same = tmp_path / "same"
    run("analyze", "attention", "-c", a, "-c", a, video, "--no-align", "--out", same, "--device", "cpu")
    np.testing.assert_array_equal(np.load(same / "attention_clip.npy"), np.load(same / "attention_clip.baseline.npy"))
    np.testing.assert_array_equal(np.load(same / "attention_clip.npy"), v)
    # again into the same folder: refused without --force; with it, the earlier files replaced
    res = CliRunner().invoke(app, ["analyze", "attention", "-c", str(a), str(image), "--no-align", "--out", str(same)])
    assert res.exit_code == 2 and "--force" in res.output
    run("analyze", "attention", "-c", a, image, "--no-align", "--out", same, "--force", "--device", "cpu")
    assert sorted(p.name for p in same.iterdir()) == [".s4d-owner.json", "attention.json", "attention_face.npy", "attention_face.png"]


def test_the_authors_checkpoint_layout(media, tmp_path):
    """A file as the authors' fine-tuning code saves it (no config, no class names), at the
    geometry a foreign file is assumed to have (160 px, 16 frames)."""
    root, video, image, _, _ = media
    enc = EncoderConfig(img_size=160, num_frames=16, dim=64, depth=2, num_heads=1)
    model = Classifier(ModelConfig(encoder=enc, heads={"video": 7, "image": 7}, moae=MoEConfig(blocks=(1,))))
    torch.save({"model": to_reference(model.state_dict()), "epoch": 99}, tmp_path / "s4d_dfew_fold1.pth")
    out = tmp_path / "att"
    run("analyze", "attention", "-c", tmp_path / "s4d_dfew_fold1.pth", video, image, "--no-align", "--out", out, "--device", "cpu")
    assert np.load(out / "attention_clip.npy").shape == (8, 10, 10)  # (16 / 2, 160 / 16, 160 / 16)
    assert np.load(out / "attention_face.npy").shape == (10, 10)
    maps, _ = mean_token_attention(model.eval(), torch.zeros(1, 3, 160, 160))
    assert maps.shape == (1, 10, 10)


def test_bad_inputs_are_one_line(media, tmp_path):
    root, video, _, a, _ = media
    code, _, err = s4d("analyze", "attention", "-c", a, tmp_path / "missing.mp4", "--no-align", "--out", tmp_path / "o")
    assert code == 2 and "missing.mp4: no such file" in one_error_line(err)
    mae = save_checkpoint(build_mae("debug"), tmp_path / "mae.safetensors")
    res = CliRunner().invoke(app, ["analyze", "attention", "-c", str(mae), str(video), "--no-align", "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "pre-training (MAE) checkpoint has no classifier head" in res.output
    res = CliRunner().invoke(app, ["analyze", "attention", "-c", str(a), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "--manifest" in res.output
    assert not (tmp_path / "o").exists()  # nothing written by a refused command


def test_real_faces_are_aligned_as_predict_does(media, fixtures_dir, tmp_path):
    """The default path finds and aligns the face (s4d predict's FacePrep); an image without a
    face is one line and leaves no folder behind."""
    _, _, cartoon, a, _ = media
    out = tmp_path / "att"
    run("analyze", "attention", "-c", a, fixtures_dir / "single_face.jpg", "--out", out, "--device", "cpu")
    assert np.load(out / "attention_single_face.npy").shape == (4, 4)
    res = CliRunner().invoke(app, ["analyze", "attention", "-c", str(a), str(cartoon), "--out", str(tmp_path / "none")])
    assert res.exit_code == 2 and "no face found" in res.output and not (tmp_path / "none").exists()


def test_manifest_mode_reads_the_test_split(media, tmp_path):
    from preprocess.safe_json import dumps

    from .test_train import make_colour_task

    m, shards = make_colour_task(tmp_path)
    (tmp_path / "data").mkdir()
    shards.rename(tmp_path / "data" / "colour")
    (tmp_path / "colour.json").write_text(dumps(m.to_dict()))
    out = tmp_path / "att"
    text = run("analyze", "attention", "-c", media[3], "-m", tmp_path / "colour.json", "--limit", "3", "--data-root", tmp_path / "data", "--out", out)
    listed = json.loads((out / "attention.json").read_text())["inputs"]
    assert len(listed) == 3 and all(row["shape"] == [2, 4, 4] for row in listed) and "map (2, 4, 4)" in text
    assert all((out / f).is_file() for row in listed for f in row["files"])


def test_the_demo_size_model(media, tmp_path):
    """The model size ``s4d demo`` trains (64 px, 8 frames, 8 px patches): maps of (8/2, 64/8, 64/8)
    per clip and (64/8, 64/8) per image, different between two demo models."""
    root, video, image, _, _ = media
    ckpts = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        ckpts.append(save_checkpoint(build_model("s4d", "demo", video_classes=3, image_classes=3), tmp_path / f"demo{seed}.safetensors"))
    out = tmp_path / "att"
    run("analyze", "attention", "-c", ckpts[0], "-c", ckpts[1], video, image, "--no-align", "--out", out, "--device", "cpu")
    v, v_base = np.load(out / "attention_clip.npy"), np.load(out / "attention_clip.baseline.npy")
    assert v.shape == (4, 8, 8) and np.load(out / "attention_face.npy").shape == (8, 8)
    assert not np.allclose(v, v_base)
