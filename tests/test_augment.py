"""RandAugment against timm's own ``rand_augment_transform``, and the training recipe's order.

The statistic is the mean absolute pixel change of one draw (0..255 scale). Tolerances, for
400 draws a side: the share of unchanged outputs within 0.04, the mean change within 10%, and
the two-sample Kolmogorov-Smirnov distance below 0.1 (its 5% critical value at these sizes is
~0.096 for equal distributions).
"""

from __future__ import annotations

import contextlib
import random

import numpy as np
import pytest
import torch
from PIL import Image
from timm.data.auto_augment import rand_augment_transform

from pipelines import Augment, Loader, LoaderConfig, open_dataset
from pipelines.augment import BatchAugment, epoch_generator, erase_box, rrc_box
from pipelines.loader import dali_available
from pipelines.randaug import OPS, RandAugment, RandAugmentSpec
from preprocess.manifest import parse_manifest
from preprocess.run import run_shards
from preprocess.shards.folder import finalize

from .media_factory import moving_square, write_video

needs_dali = pytest.mark.skipif(not dali_available(), reason="nvidia-dali not installed")
CLIP, IMAGE = "rand-m7-n4-mstd0.5-inc1", "rand-m9-n2-mstd0.5-inc1"


def _images(n: int = 4, side: int = 64) -> list[np.ndarray]:
    return [moving_square(1, side, side, seed=s)[0] for s in range(n)]


def _timm(spec: str, images: list[np.ndarray], draws: int, seed: int = 0) -> np.ndarray:
    """Mean |change| per draw of timm's transform, hparams as the reference builds them for
    clips (translate_const 45% of the side, bilinear, grey fill)."""
    random.seed(seed)
    np.random.seed(seed)
    tf = rand_augment_transform(spec, {"translate_const": int(images[0].shape[0] * 0.45), "interpolation": Image.BILINEAR})
    stats = []
    for i in range(draws):
        img = images[i % len(images)]
        out = np.asarray(tf(Image.fromarray(img)), dtype=np.int16)
        stats.append(np.abs(out - img.astype(np.int16)).mean())
    return np.asarray(stats)


def _assert_same_distribution(ours: np.ndarray, theirs: np.ndarray) -> None:
    unchanged = abs((ours == 0).mean() - (theirs == 0).mean())
    assert unchanged < 0.04, f"share unchanged: ours {(ours == 0).mean():.3f}, timm {(theirs == 0).mean():.3f}"
    assert abs(ours.mean() / theirs.mean() - 1) < 0.10, f"mean change: ours {ours.mean():.2f}, timm {theirs.mean():.2f}"
    grid = np.sort(np.concatenate([ours, theirs]))
    ks = np.abs(
        np.searchsorted(np.sort(ours), grid, side="right") / len(ours) - np.searchsorted(np.sort(theirs), grid, side="right") / len(theirs)
    ).max()
    assert ks < 0.1, f"Kolmogorov-Smirnov distance {ks:.3f} (ours mean {ours.mean():.2f}, timm {theirs.mean():.2f})"


def test_spec_parses_timm_notation_and_rejects_what_it_cannot_do():
    s = RandAugmentSpec.parse(CLIP)
    assert (s.magnitude, s.num_ops, s.magnitude_std, s.prob) == (7, 4, 0.5, 0.5)
    assert RandAugmentSpec.parse("rand-m9-n2-p1.0-inc1").prob == 1.0
    with pytest.raises(ValueError, match="only the increasing op set"):
        RandAugmentSpec.parse("rand-m9-n2-inc0")
    with pytest.raises(ValueError, match="unknown part 'x3'"):
        RandAugmentSpec.parse("rand-m9-x3")
    with pytest.raises(ValueError, match="m must be in 0..10"):
        Augment(randaugment="rand-m30-n2-inc1")
    assert len(OPS) == 15


@pytest.mark.parametrize("spec", [CLIP, IMAGE])
def test_randaugment_matches_timm_on_the_same_images(spec):
    images = _images()
    ra = RandAugment(RandAugmentSpec.parse(spec))
    gen = torch.Generator().manual_seed(1)
    ours = []
    for i in range(1600):  # 4x timm's draws: ours are cheap, and the comparison's noise is mostly theirs then
        img = images[i % len(images)]
        out = ra(torch.from_numpy(img).permute(2, 0, 1).contiguous(), gen).permute(1, 2, 0).numpy()
        ours.append(np.abs(out.astype(np.int16) - img.astype(np.int16)).mean())
    _assert_same_distribution(np.asarray(ours), _timm(spec, images, 400))


def test_a_clip_gets_the_same_ops_on_every_frame():
    frame = torch.from_numpy(_images(1)[0]).permute(2, 0, 1)
    clip = frame.expand(6, -1, -1, -1).contiguous()
    ra = RandAugment(RandAugmentSpec.parse("rand-m9-n4-mstd0.5-p1.0-inc1"))
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        out = ra(clip, gen)
        assert all(torch.equal(out[0], f) for f in out[1:])


def test_crop_and_erase_boxes_follow_their_rules():
    gen = torch.Generator().manual_seed(0)
    for _ in range(200):
        top, left, h, w = rrc_box(80, 96, (0.08, 1.0), (3 / 4, 4 / 3), gen)
        assert 0 <= top <= 80 - h and 0 <= left <= 96 - w and h > 0 and w > 0
        box = erase_box(64, 64, gen)
        assert box is not None and 0.01 < box[2] * box[3] / 64**2 < 0.4


def test_clip_erasing_is_one_box_of_noise_for_all_frames():
    cfg = LoaderConfig(
        batch_size=2, size=32, frames=4, augment=Augment(randaugment=None, rrc_scale=(1.0, 1.0), rrc_ratio=(1.0, 1.0), flip=0.0, erase=1.0)
    )
    decoded = torch.full((2, 4, 32, 32, 3), 120, dtype=torch.uint8)
    out = BatchAugment(cfg, video=True)(decoded, epoch_generator(0, 0, 0))  # (2, 3, 4, 32, 32)
    plain = (120 / 255 - torch.tensor(cfg.mean)) / torch.tensor(cfg.std)
    erased = (out - plain.view(1, 3, 1, 1, 1)).abs() > 1e-5  # (2, 3, 4, 32, 32)
    for clip in erased:
        mask = clip.any(dim=0)  # (4, 32, 32)
        assert mask.any() and all(torch.equal(mask[0], m) for m in mask[1:])  # the same box on every frame
    assert out[0][erased[0]].std() > 0.5  # per-pixel N(0, 1) noise, not a constant


def test_image_erasing_is_black_before_normalisation():
    cfg = LoaderConfig(
        batch_size=1, size=32, augment=Augment(randaugment=None, rrc_scale=(1.0, 1.0), rrc_ratio=(1.0, 1.0), flip=0.0, erase=1.0, erase_mode="zero")
    )
    out = BatchAugment(cfg, video=False)(torch.full((1, 32, 32, 3), 200, dtype=torch.uint8), epoch_generator(0, 0, 0))
    black = -torch.tensor(cfg.mean) / torch.tensor(cfg.std)
    hit = (out[0] - black.view(3, 1, 1)).abs().amax(dim=0) < 1e-5
    assert 0 < hit.float().mean() < 0.4


# ----------------------------------------------------------------------------- both backends


@pytest.fixture(scope="module")
def still_clips(tmp_path_factory):
    """Clips whose frames are all the same picture: any frame is the un-augmented image."""
    tmp = tmp_path_factory.mktemp("still")
    raw = tmp / "raw"
    raw.mkdir()
    rows = ["path,label,split"]
    for i, img in enumerate(_images(8)):
        write_video(raw / f"s{i}.webm", np.repeat(img[None], 6, axis=0))
        rows.append(f"s{i}.webm,{'ab'[i % 2]},train")
    (raw / "list.csv").write_text("\n".join(rows) + "\n")
    m = parse_manifest(
        {
            "name": "still",
            "modality": "video",
            "classes": ["a", "b"],
            "layout": {"adapter": "csv", "options": {"csv": "list.csv"}},
            "preprocess": {"align": False, "size": 64},
            "partitions": ["train"],
            "folds": {"main": {"train": ["train"], "test": []}},
            "clip": {"frames": 4, "stride": 1},
        },
        tmp / "still.json",
    )
    run_shards(m, raw, tmp / "out")
    finalize(m, tmp / "out")
    return open_dataset(m, tmp / "out", role="train")


def _uint8(x: torch.Tensor, cfg: LoaderConfig) -> np.ndarray:
    """Normalised (3, T, H, W) -> uint8 (T, H, W, 3)."""
    mean, std = torch.tensor(cfg.mean).view(3, 1, 1, 1), torch.tensor(cfg.std).view(3, 1, 1, 1)
    return ((x * std + mean) * 255).round().clamp(0, 255).byte().permute(1, 2, 3, 0).numpy()


@pytest.mark.parametrize("backend,branch", [pytest.param("dali", "cpu", marks=needs_dali), ("torch", "cpu"), ("torch", "gpu")])
def test_loader_randaugment_matches_timm_on_both_backends(still_clips, backend, branch):
    """Both backends, and the batched device path (its kernels' GPU branch, run here on CPU)."""
    with _gpu_branch() if branch == "gpu" else contextlib.nullcontext():
        _loader_matches_timm(still_clips, backend)


def _loader_matches_timm(still_clips, backend: str) -> None:
    only_ra = Augment(randaugment=CLIP, rrc_scale=(1.0, 1.0), rrc_ratio=(1.0, 1.0), flip=0.0, erase=0.0)
    cfg = LoaderConfig(batch_size=4, size=64, frames=4, stride=1, augment=only_ra)
    plain_cfg = LoaderConfig(batch_size=4, size=64, frames=4, stride=1, augment=Augment.off())
    base = {k: _uint8(x, plain_cfg)[0] for b in Loader(still_clips, plain_cfg, backend=backend).epoch(0) for k, x in zip(b["keys"], b["pixels"])}
    loader = Loader(still_clips, cfg, backend=backend)
    ours = []
    for epoch in range(50):
        for b in loader.epoch(epoch):
            for k, x in zip(b["keys"], b["pixels"]):
                frames = _uint8(x, cfg).astype(np.int16)
                # the same ops on every frame: VP9 leaves the still frames a level apart, which
                # thresholds (solarize, equalise) may amplify on a few pixels, never on most
                assert (np.abs(frames - frames[0]) > 12).mean() < 0.15
                ours.append(np.abs(frames[0] - base[k].astype(np.int16)).mean())
    ours_a = np.asarray(ours)
    ours_a[ours_a < 0.02] = 0.0  # float round trip of an untouched frame
    _assert_same_distribution(ours_a, _timm(CLIP, list(base.values()), len(ours_a)))


@pytest.mark.parametrize("warp", ["warp_cv2", "warp_grid"])  # the CPU path and the GPU path (run here on CPU)
def test_geometric_ops_match_pil_on_both_paths(warp):
    from timm.data import auto_augment as aa

    from pipelines import augment_ops as ops
    from pipelines import randaug

    img = _images(1)[0]
    pil, x = Image.fromarray(img), torch.from_numpy(img).permute(2, 0, 1).contiguous()
    kw = {"fillcolor": (128, 128, 128), "resample": Image.BILINEAR}
    H, W = img.shape[:2]
    cases = [
        ((1, 0.2, 0, 0, 1, 0), aa.shear_x(pil, 0.2, **kw)),
        ((1, 0, 0, -0.25, 1, 0), aa.shear_y(pil, -0.25, **kw)),
        ((1, 0, 0.3 * W, 0, 1, 0), aa.translate_x_rel(pil, 0.3, **kw)),
        ((1, 0, 0, 0, 1, -0.2 * H), aa.translate_y_rel(pil, -0.2, **kw)),
        (randaug.rotation(20, H, W), aa.rotate(pil, 20, **kw)),
        (randaug.rotation(-13, H, W), aa.rotate(pil, -13, **kw)),
    ]
    for m, expected in cases:
        if warp == "warp_cv2":
            ours = ops.warp_cv2(x, m)
        else:  # the batched kernel: one matrix per frame
            ours = ops.warp_grid(x[None], torch.tensor(m, dtype=torch.float64)[None])[0]
        ours = ours.permute(1, 2, 0).numpy().astype(int)
        diff = np.abs(ours - np.asarray(expected).astype(int))
        assert diff.mean() < 1.5 and np.median(diff) <= 1, (m, diff.mean())  # edge pixels blend the fill differently


@pytest.mark.gpu
def test_gpu_ops_agree_with_the_cpu_ops():
    """The GPU branches (gather tables, bincount, grid_sample, float sharpness) against the
    OpenCV branches the CPU tests check against PIL."""
    from pipelines.randaug import apply_op

    x = torch.from_numpy(np.stack(_images(4))).permute(0, 3, 1, 2).contiguous()
    for name in OPS:
        cpu = apply_op(x, name, 7.0, -1.0)
        gpu = apply_op(x.cuda(), name, 7.0, -1.0).cpu()
        diff = (cpu.int() - gpu.int()).abs().float()
        assert diff.mean() < 1.0, (name, diff.mean())


def test_ops_give_the_same_pixels_in_either_memory_layout():
    """Decoders hand over channels-last frames, the tests and the GPU path planar ones."""
    from pipelines.randaug import apply_op

    frames = torch.from_numpy(np.stack(_images(3)))  # (T, H, W, 3)
    channels_last, planar = frames.permute(0, 3, 1, 2), frames.permute(0, 3, 1, 2).contiguous()
    for name in OPS:
        a = apply_op(channels_last, name, 6.0, -1.0)
        b = apply_op(planar, name, 6.0, -1.0)
        assert torch.equal(a, b), name
        assert torch.equal(apply_op(channels_last[0], name, 6.0, -1.0), apply_op(planar[0], name, 6.0, -1.0)), name


# ----------------------------------------------------------------------------- batched (GPU) path
def _gpu_branch():
    """The device branch of every kernel, on real CPU tensors."""
    from unittest import mock

    return mock.patch("pipelines.augment_ops.host_path", lambda t: False)


def test_a_batched_round_equals_the_same_kernels_sample_by_sample():
    """``apply_batched`` runs each round over the whole batch with identity arguments for the
    samples whose op is of another kind; that must change nothing: the batch equals its samples
    run one by one through the same kernels, bit for bit."""
    from pipelines.augment_params import draw_randaugment
    from pipelines.randaug import apply_batched, plan

    spec = RandAugmentSpec.parse("rand-m9-n4-mstd0.5-p0.8-inc1")
    B = 12
    frames = torch.from_numpy(np.stack(_images(2 * B, side=48))).view(B, 2, 48, 48, 3)  # (B, T, H, W, 3)
    x = frames.permute(0, 1, 4, 2, 3)  # channels-last frames, as decoded
    seen = set()
    for seed in range(3):
        d = draw_randaugment(spec, B, torch.Generator().manual_seed(seed))
        p = plan(d.ops_BR, d.levels_BR, d.signs_BR, 48, 48)
        seen |= set().union(*p.kinds)
        with _gpu_branch():
            batched = apply_batched(x, p, p.packed())
            for b in range(B):
                one = plan(d.ops_BR[b : b + 1], d.levels_BR[b : b + 1], d.signs_BR[b : b + 1], 48, 48)
                assert torch.equal(batched[b : b + 1], apply_batched(x[b : b + 1], one, one.packed())), (seed, b, d.ops_BR[b])
    assert seen == set(range(1, 8))  # every kind met others in a batch


def test_the_batched_path_agrees_with_the_cpu_path_on_the_same_draws():
    """Both implementations consume the same draws: the outputs differ only by rounding (the
    CPU path resizes in uint8) and at crop edges (one ``grid_sample`` clamps to the frame)."""
    frames = torch.from_numpy(np.stack(_images(8, side=48))).view(2, 4, 48, 48, 3)
    for video, aug in [
        (True, Augment(erase=0.0)),
        (True, Augment(randaugment=None, erase=1.0, erase_mode="zero")),
        (False, Augment(randaugment=IMAGE, rrc_scale=(1.0, 1.0), rrc_ratio=(1.0, 1.0), erase=1.0, erase_mode="zero")),
    ]:
        cfg = LoaderConfig(batch_size=2, size=32 if video else 48, frames=4, views=2 if video else 1, augment=aug)
        batch = frames if video else frames[:, 0]
        cpu = BatchAugment(cfg, video)(batch, epoch_generator(3, 1, 0))
        with _gpu_branch():
            gpu = BatchAugment(cfg, video)(batch, epoch_generator(3, 1, 0))
        assert cpu.shape == gpu.shape
        diff = (cpu - gpu).abs() * 255 * 0.226  # back to levels, roughly
        assert diff.mean() < 1.5 and (diff > 8).float().mean() < 0.03, (video, aug, diff.mean(), (diff > 8).float().mean())


def test_mstd_above_100_draws_the_magnitude_uniformly_as_timm():
    from pipelines.augment_params import draw_randaugment

    spec = RandAugmentSpec.parse("rand-m9-n2-mstd101-inc1")
    assert spec.magnitude_std == float("inf")
    levels = draw_randaugment(spec, 4000, torch.Generator().manual_seed(0)).levels_BR.flatten()
    assert levels.min() >= 0 and levels.max() <= 9
    assert abs(levels.mean() - 4.5) < 0.1 and abs((levels < 3).float().mean() - 1 / 3) < 0.02  # uniform on 0..m
