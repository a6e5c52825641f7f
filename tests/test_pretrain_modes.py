"""Pre-training settings (Table IV #2-#5: images only, videos only, both, video frames as the
stills) and the image share of the steps (Fig. 3c), at ``--size debug`` on generated shards."""

import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch

from pipelines import Augment, FrameLoader, LoaderConfig, open_dataset
from preprocess.errors import InputError
from preprocess.mixture import load_mixture, select_streams
from s4d.models import build_mae
from s4d.train.config import PretrainConfig
from s4d.train.pretrain import pretrain
from s4d.train.pretrain_data import build_pretrain_data, lr_batch

from .test_bad_inputs import one_error_line, s4d
from .test_train import make_colour_task, make_stills


@pytest.fixture(scope="module")
def mixtures(tmp_path_factory):
    """12 training clips (12 frames, 64 px) and 6 stills; mixtures with both, and videos only."""
    tmp = tmp_path_factory.mktemp("modes")
    m, out = make_colour_task(tmp / "colour")
    data = tmp / "data"
    shutil.copytree(out, data / "colour")
    stills = make_stills(tmp, data / "stills", 6)
    (tmp / "colour.json").write_text(json.dumps(m.to_dict()))
    (tmp / "stills.json").write_text(json.dumps(stills.to_dict()))
    both = [{"manifest": "colour.json", "share": 0.5, "repeat": 2}, {"manifest": "stills.json", "share": 1.0}]
    (tmp / "mix.json").write_text(json.dumps({"name": "mix", "sources": both}))
    (tmp / "vid.json").write_text(json.dumps({"name": "vid", "sources": both[:1]}))
    return tmp, data


def _cfg(tmp, data, out, mixture="mix.json", **kw):
    cfg = PretrainConfig(
        mixture=str(tmp / mixture), out=str(out), size="debug", epochs=1, video_batch=2, image_batch=2, data_root=str(data), backend="torch"
    )
    return dataclasses.replace(cfg, **kw)


# 12 clips x share 0.5 / 2 per batch = 3 video batches; 6 stills / 2 = 3; frames: one per clip, x 0.5 / 2 = 3
MODES = {
    "both": ("colour 3 batches, stills 3 batches per epoch (3/6 image steps)", 6, 2 * 2),
    "images": ("stills 3 batches per epoch (3/3 image steps)", 3, 2),
    "videos": ("colour 3 batches per epoch (0/3 image steps)", 3, 2 * 2),
    "frames": ("colour 3 batches, colour-frames 3 batches per epoch (3/6 image steps)", 6, 2 * 2),
}


@pytest.mark.parametrize("mode", list(MODES))
def test_each_mode_pretrains_one_epoch_on_its_streams(mixtures, tmp_path, mode):
    tmp, data = mixtures
    line, steps, lr_samples = MODES[mode]
    lines = []
    assert pretrain(_cfg(tmp, data, tmp_path / "pre", modality=mode), log=lines.append)
    assert any(x == f"pre-training: {line}" for x in lines), lines
    metrics = [json.loads(x) for x in (tmp_path / "pre" / "metrics.jsonl").read_text().splitlines()]
    assert [x["steps"] for x in metrics] == [steps] and np.isfinite(metrics[0]["loss"])
    groups = torch.load(tmp_path / "pre" / "checkpoints" / "state.pt", weights_only=True)["optimizer"]["param_groups"]
    assert groups[0]["initial_lr"] == pytest.approx(1.6e-3 * lr_samples / 512)  # clips x views with video steps, else images


def test_frames_are_image_batches_of_one_random_frame_per_clip(mixtures):
    tmp, data = mixtures
    m = load_mixture(tmp / "mix.json").manifests()[0]
    ds = open_dataset(m, data / "colour", None, "train")
    cfg = LoaderConfig(batch_size=4, train=True, size=32, frames=1, stride=1, augment=Augment.mae_image(), seed=3)
    loader = FrameLoader(ds, cfg, backend="torch")
    batches = list(loader.epoch(0))
    assert len(batches) == 3 and all(b["pixels"].shape == (4, 3, 32, 32) and b["pixels"].dtype == torch.float32 for b in batches)
    assert sorted(k for b in batches for k in b["keys"]) == sorted(ds.keys)  # one frame of every clip per pass
    starts = np.concatenate([b.starts for b in loader.batches(0)])
    assert starts.min() >= 0 and starts.max() < 12 and len(set(starts.tolist())) > 3  # a random frame of each 12-frame clip
    assert np.array_equal(starts, np.concatenate([b.starts for b in FrameLoader(ds, cfg, backend="torch").batches(0)]))  # seeded
    assert not np.array_equal(starts, np.concatenate([b.starts for b in loader.batches(1)]))  # a new draw each epoch
    assert not np.array_equal(starts, np.concatenate([b.starts for b in FrameLoader(ds, cfg, backend="torch", rank=1, world=2).batches(0)])[:6])
    again = next(FrameLoader(ds, cfg, backend="torch").epoch(0))["pixels"]
    assert torch.equal(again, batches[0]["pixels"])  # decode and augmentation seeded by (seed, epoch, rank)
    mae = build_mae("debug")  # the MAE's image path, with the image masking ratio
    x = torch.nn.functional.interpolate(batches[0]["pixels"], size=mae.config.encoder.img_size)
    out = mae(x)
    assert torch.isfinite(out.loss)
    n = (mae.config.encoder.img_size // mae.config.encoder.patch) ** 2  # an image's tokens
    assert out.masks.masked_BM.shape == (4, int(mae.config.mask_ratio_image * n))
    with pytest.raises(InputError, match="frames are drawn from video shards"):
        FrameLoader(open_dataset(load_mixture(tmp / "mix.json").manifests()[1], data / "stills", None, "train"), cfg, backend="torch")


def test_image_share_is_the_share_of_one_pass_of_the_still_images(mixtures):
    """``--image-share x`` (Fig. 3c): every image-side stream uses x of one pass of its data per
    epoch in place of the mixture's share; the video streams keep theirs; x = 0 drops the image
    side (the videos-only row), None keeps the mixture as it is."""
    tmp, _ = mixtures
    mix = load_mixture(tmp / "mix.json")
    shares = lambda modality, x: {s.name: s.source.share for s in select_streams(mix, modality, x)}  # noqa: E731
    assert shares("both", None) == {"colour": 0.5, "stills": 1.0}
    assert shares("both", 0.25) == {"colour": 0.5, "stills": 0.25}
    assert shares("both", 1.0) == {"colour": 0.5, "stills": 1.0}
    assert shares("both", 0.0) == {"colour": 0.5}
    assert shares("frames", 0.5) == {"colour": 0.5, "colour-frames": 0.5}
    assert shares("images", 0.5) == {"stills": 0.5}
    with pytest.raises(InputError, match="--image-share 0 with --modality images leaves no stream"):
        select_streams(mix, "images", 0.0)


def test_image_share_in_a_run(mixtures, tmp_path):
    tmp, data = mixtures
    lines = []
    assert pretrain(_cfg(tmp, data, tmp_path / "p40", image_share=0.4), log=lines.append)
    assert "pre-training: colour 3 batches, stills 1 batches per epoch (1/4 image steps)" in lines  # round(0.4 x 3 batches) = 1
    cfg = _cfg(tmp, data, tmp_path / "p100", image_share=1.0)  # the data side only: no second run
    loaded = build_pretrain_data(cfg, load_mixture(cfg.mixture), img_size=32, rank=0, world=1, device_id=None)
    assert loaded.describe() == "colour 3 batches, stills 3 batches per epoch (3/6 image steps)"  # the dual row
    zero = build_pretrain_data(dataclasses.replace(cfg, image_share=0.0), load_mixture(cfg.mixture), img_size=32, rank=0, world=1, device_id=None)
    assert zero.describe() == "colour 3 batches per epoch (0/3 image steps)" and lr_batch(cfg, zero.streams) == 2 * 2


def test_a_mode_without_its_sources_is_one_line(mixtures, tmp_path):
    tmp, data = mixtures
    vid = load_mixture(tmp / "vid.json")
    code, _, err = s4d("pretrain", "-m", tmp / "vid.json", "--modality", "images", "--out", tmp_path / "x", "--data-root", data, "--size", "debug")
    assert code == 2 and one_error_line(err).endswith("--modality images needs an image source; it has colour (video)")
    with pytest.raises(InputError, match="--image-share 0.5 asks for still-image steps"):
        select_streams(vid, "both", 0.5)
    with pytest.raises(InputError, match="--modality frames needs a video source"):
        select_streams(
            load_mixture(tmp / "mix.json").__class__("stills", (load_mixture(tmp / "mix.json").sources[1],), source=tmp / "mix.json"), "frames"
        )
    with pytest.raises(InputError, match="--modality must be one of"):
        select_streams(vid, "audio")
    assert [s.name for s in select_streams(vid, "frames")] == ["colour", "colour-frames"]


def test_clips_longer_than_the_model_takes_are_one_line_before_any_work(tmp_path):
    """The released mixture's 16-frame VoxCeleb2 clips at --size debug (4 frames): the dry run
    (and a run) say so naming the manifest, instead of a shape error inside the model."""
    code, _, err = s4d("pretrain", "--dry-run", "--size", "debug", "--data-root", tmp_path)
    line = one_error_line(err)
    assert code == 2 and "voxceleb2" in line and "clips of 16 frames, but --size debug takes at most 4" in line, line
