"""Loading pipelines on shards written by the preprocessing code: DALI (CPU) and the fallback."""

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from pipelines import Augment, JointLoader, Loader, LoaderConfig, ShardError, open_dataset
from pipelines.augment import BatchAugment, epoch_generator
from pipelines.loader import dali_available
from pipelines.sampling import clip_indices, epoch_order, eval_starts, joint_schedule, rank_slice, train_start
from preprocess.manifest import ManifestError, parse_manifest
from preprocess.run import run_shards
from preprocess.shards.folder import finalize

from .media_factory import moving_square, write_image, write_video

needs_dali = pytest.mark.skipif(not dali_available(), reason="nvidia-dali not installed")


def test_clip_sampling_rule_by_hand():
    # long clip: window of 16*4 = 64 frames inside 100 -> start in 0..36
    assert train_start(100, 16, 4, 0.0) == 0 and train_start(100, 16, 4, 0.999) == 36
    assert clip_indices(36, 100, 16, 4).tolist() == list(range(36, 100, 4))
    # short clip: start 0 and the last frame repeats
    assert train_start(30, 16, 4, 0.7) == 0
    assert clip_indices(0, 30, 16, 4).tolist() == [0, 4, 8, 12, 16, 20, 24, 28] + [29] * 8
    # test protocol: first and last 16 entries of the grid range(0, n, stride)
    assert eval_starts(100, 16, 4) == (0, 36) and clip_indices(36, 100, 16, 4).tolist() == list(range(36, 100, 4))
    assert eval_starts(101, 16, 4) == (0, 40) and clip_indices(40, 101, 16, 4)[-1] == 100
    assert eval_starts(40, 16, 4) == (0, 0)
    assert eval_starts(16, 16, 1) == (0, 0) and eval_starts(17, 16, 1) == (0, 1)


def test_rank_split_covers_each_sample_once():
    order = np.random.default_rng(0).permutation(11)
    parts = [rank_slice(order, r, 2, pad=False) for r in range(2)]
    assert sorted(np.concatenate(parts).tolist()) == list(range(11))  # eval: exactly once
    padded = [rank_slice(order, r, 2, pad=True) for r in range(2)]
    assert len(padded[0]) == len(padded[1]) == 6 and set(np.concatenate(padded).tolist()) == set(range(11))
    with pytest.raises(ValueError, match="rank 2 outside world size 2"):
        rank_slice(order, 2, 2, pad=False)


def test_more_than_one_pass_without_balancing():
    order = epoch_order(np.zeros(5), seed=0, epoch=0, shuffle=True, num_samples=12)
    assert len(order) == 12 and sorted(order[:5]) == sorted(order[5:10]) == list(range(5))


def test_class_balanced_draws_and_epoch_determinism():
    labels = np.array([0] * 90 + [1] * 9 + [2] * 1)
    draws = epoch_order(labels, seed=1, epoch=0, shuffle=True, class_balanced=True, num_samples=30000)
    share = np.bincount(labels[draws], minlength=3) / len(draws)
    assert np.allclose(share, 1 / 3, atol=0.02)
    a = epoch_order(labels, seed=1, epoch=3, shuffle=True)
    assert np.array_equal(a, epoch_order(labels, seed=1, epoch=3, shuffle=True))
    assert not np.array_equal(a, epoch_order(labels, seed=1, epoch=4, shuffle=True))


def test_joint_schedule_counts_ratio_and_same_on_every_rank():
    s = joint_schedule(20, 10, seed=5, epoch=2)
    assert Counter(s) == {"video": 20, "image": 10}
    assert s == joint_schedule(20, 10, seed=5, epoch=2) and s != joint_schedule(20, 10, seed=5, epoch=3)


# ----------------------------------------------------------------------------- real shards


def _video_manifest(tmp_path):
    return parse_manifest(
        {
            "name": "clips",
            "modality": "video",
            "classes": ["a", "b"],
            "layout": {"adapter": "csv", "options": {"csv": "list.csv"}},
            "preprocess": {"align": False, "size": 64, "shard_samples": 3},
            "partitions": ["train", "test"],
            "folds": {"main": {"train": ["train"], "test": ["test"]}},
            "clip": {"frames": 8, "stride": 2},
        },
        tmp_path / "clips.json",
    )


@pytest.fixture(scope="module")
def clip_shards(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("clips")
    raw = tmp / "raw"
    raw.mkdir()
    rows = ["path,label,split"]
    for i in range(7):  # 12..48 frames: shorter and longer than the 16-frame window
        write_video(raw / f"v{i}.webm", moving_square(12 + 6 * i, 72, 96, seed=i))
        rows.append(f"v{i}.webm,{'ab'[i % 2]},{'train' if i < 5 else 'test'}")
    (raw / "list.csv").write_text("\n".join(rows) + "\n")
    m = _video_manifest(tmp)
    run_shards(m, raw, tmp / "out")
    finalize(m, tmp / "out")
    return m, tmp / "out"


def cfg(train, **kw):
    return LoaderConfig(batch_size=2, train=train, size=64, frames=8, stride=2, **kw)


@needs_dali
def test_dali_cpu_and_fallback_agree_in_eval(clip_shards):
    m, out = clip_shards
    ds = open_dataset(m, out, role="train")
    dali = list(Loader(ds, cfg(False), backend="dali").epoch(0))
    torch_ = list(Loader(ds, cfg(False), backend="torch").epoch(0))
    assert [b["keys"] for b in dali] == [b["keys"] for b in torch_] == [["v0", "v1"], ["v2", "v3"], ["v4"]]
    for a, b in zip(dali, torch_):
        assert a["pixels"].shape == b["pixels"].shape and a["pixels"].shape[1:] == (2, 3, 8, 64, 64)
        assert a["pixels"].dtype == torch.float32 and torch.equal(a["labels"], b["labels"])
        diff = (a["pixels"] - b["pixels"]).abs()
        assert diff.mean() < 0.05 and diff.quantile(0.99) < 0.35  # YUV->RGB rounding of two decoders
    # the second clip of a 36-frame video starts at 36 - 15 = 21; of a 12-frame one at 0
    v0 = dali[0]["pixels"][0]
    assert torch.allclose(v0[0], v0[1])  # 12 frames: both test clips are the same


@pytest.mark.parametrize("backend", [pytest.param("dali", marks=needs_dali), "torch"])
def test_training_batches_shapes_ranges_and_determinism(clip_shards, backend):
    m, out = clip_shards
    ds = open_dataset(m, out, role="train")
    loader = Loader(ds, cfg(True), backend=backend)
    first = list(loader.epoch(0))
    assert [len(b["keys"]) for b in first] == [2, 2, 1]
    for b in first:
        x = b["pixels"]
        assert x.shape[1:] == (3, 8, 64, 64) and x.dtype == torch.float32 and torch.isfinite(x).all()
        # ImageNet-normalised pixels (an erased box holds N(0, 1) noise, which may go past)
        assert ((x > -2.2) & (x < 2.7)).float().mean() > 0.95
    again = list(Loader(ds, cfg(True), backend=backend).epoch(0))
    assert all(torch.equal(a["pixels"], b["pixels"]) for a, b in zip(first, again))
    other_epoch = list(loader.epoch(1))
    assert [b["keys"] for b in other_epoch] != [b["keys"] for b in first] or not all(
        torch.equal(a["pixels"], b["pixels"]) for a, b in zip(first, other_epoch)
    )


@needs_dali
def test_same_sample_order_and_starts_on_both_backends_in_training(clip_shards):
    m, out = clip_shards
    ds = open_dataset(m, out, role="train")
    a = Loader(ds, cfg(True), backend="dali")
    b = Loader(ds, cfg(True), backend="torch")
    for epoch in range(3):
        assert [x.positions.tolist() for x in a.batches(epoch)] == [x.positions.tolist() for x in b.batches(epoch)]
        assert [x.starts.tolist() for x in a.batches(epoch)] == [x.starts.tolist() for x in b.batches(epoch)]


def test_two_ranks_cover_the_test_set_once(clip_shards):
    m, out = clip_shards
    ds = open_dataset(m, out, role="train")
    seen = []
    for rank in range(2):
        for b in Loader(ds, cfg(False, augment=Augment.off()), rank=rank, world=2, backend="torch").epoch(0):
            seen += b["keys"]
    assert sorted(seen) == sorted(ds.keys)


def test_corrupt_shard_is_named(clip_shards, tmp_path):
    import shutil

    m, out = clip_shards
    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    tar = broken / "train-00000.tar"
    tar.write_bytes(tar.read_bytes()[:-2048])
    with pytest.raises(ManifestError, match="train-00000.tar: .* bytes, shards.json says"):
        open_dataset(m, broken, role="train")
    shutil.rmtree(broken)
    broken = _scrambled_copy(out, tmp_path)  # the clips' payload scrambled; size, index and .info records kept
    ds = open_dataset(m, broken, role="train")
    with pytest.raises(ShardError, match="train-00000.tar"):
        list(Loader(ds, cfg(False), backend="torch").epoch(0))


def test_fallback_is_chosen_with_a_notice_when_dali_is_missing(clip_shards, monkeypatch, capsys):
    import pipelines.loader as loader_mod

    m, out = clip_shards
    monkeypatch.setattr(loader_mod, "dali_available", lambda: False)
    monkeypatch.setattr(loader_mod, "_NOTICE_SHOWN", False)
    loader = Loader(open_dataset(m, out, role="test"), cfg(False))
    assert loader.backend == "torch" and "using the PyTorch loader" in capsys.readouterr().err
    with pytest.raises(ValueError, match="nvidia-dali is not installed"):
        Loader(open_dataset(m, out, role="test"), cfg(False), backend="dali")


@pytest.fixture(scope="module")
def image_shards(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("images")
    raw = tmp / "raw"
    raw.mkdir()
    rows = ["path,label,split"]
    for i in range(9):
        write_image(raw / f"i{i}.jpg", moving_square(1, 120, 100, seed=i)[0])
        rows.append(f"i{i}.jpg,{'abc'[i % 3] if i < 7 else 'a'},train")
    (raw / "list.csv").write_text("\n".join(rows) + "\n")
    m = parse_manifest(
        {
            "name": "faces",
            "modality": "image",
            "classes": ["a", "b", "c"],
            "layout": {"adapter": "csv", "options": {"csv": "list.csv"}},
            "preprocess": {"align": False, "size": 80, "codec": "jpeg", "quality": 95},
            "partitions": ["train"],
            "folds": {"main": {"train": ["train"], "test": []}},
        },
        tmp / "faces.json",
    )
    run_shards(m, raw, tmp / "out")
    finalize(m, tmp / "out")
    return m, tmp / "out"


@pytest.mark.parametrize("backend", [pytest.param("dali", marks=needs_dali), "torch"])
def test_image_batches(image_shards, backend):
    m, out = image_shards
    ds = open_dataset(m, out, role="train")
    c = LoaderConfig(batch_size=4, train=True, size=64, image_resize=72, augment=Augment.image())
    batches = list(Loader(ds, c, backend=backend).epoch(0))
    assert [b["pixels"].shape for b in batches] == [(4, 3, 64, 64), (4, 3, 64, 64), (1, 3, 64, 64)]
    ev = LoaderConfig(batch_size=4, train=False, size=64, image_resize=72)
    if backend == "dali":
        a = list(Loader(ds, ev, backend="dali").epoch(0))
        b = list(Loader(ds, ev, backend="torch").epoch(0))
        for x, y in zip(a, b):
            assert (x["pixels"] - y["pixels"]).abs().mean() < 0.08  # resize filters differ slightly


def test_joint_loader_interleaves_single_source_batches(clip_shards, image_shards):
    mv, outv = clip_shards
    mi, outi = image_shards
    video = Loader(open_dataset(mv, outv, role="train"), cfg(True, augment=Augment.off()), backend="torch")
    image = Loader(
        open_dataset(mi, outi, role="train"),
        LoaderConfig(batch_size=2, train=True, size=64, image_resize=64, class_balanced=True, augment=Augment.off()),
        backend="torch",
    )
    joint = JointLoader(video, image, proportion=0.5, seed=3)
    assert joint.num_image_batches == 2  # 9 images / batch 2 = 5 batches per pass, x 0.5 -> 2 (rounded)
    got = list(joint.epoch(0))
    assert Counter(t for t, _ in got) == {"video": 3, "image": 2}
    assert [t for t, _ in got] == joint.schedule(0)
    for task, batch in got:
        assert batch["pixels"].ndim == (5 if task == "video" else 4)


@pytest.mark.parametrize("backend", [pytest.param("dali", marks=needs_dali), "torch"])
def test_pretraining_views_are_independent_augmentations_of_one_clip(clip_shards, backend):
    m, out = clip_shards
    ds = open_dataset(m, out, role="train")
    c = cfg(True, views=4, augment=Augment(randaugment=None, erase=0.0, flip=0.5))
    batch = next(iter(Loader(ds, c, backend=backend).epoch(0)))
    x = batch["pixels"]
    assert x.shape == (2, 4, 3, 8, 64, 64)
    assert not torch.allclose(x[0, 0], x[0, 1])  # different random crops of the same clip


def test_mixup_cutmix_on_clip_batches():
    from pipelines.mixing import BatchMixer

    torch.manual_seed(0)
    mixer = BatchMixer(num_classes=3, mixup=0.8, cutmix=1.0, smoothing=0.1)
    x = torch.randn(4, 3, 8, 16, 16)
    y = torch.tensor([0, 1, 2, 0])
    mixed, soft = mixer(x, y)
    assert mixed.shape == x.shape and soft.shape == (4, 3)
    torch.testing.assert_close(soft.sum(1), torch.ones(4))
    assert (soft.max(1).values < 1.0).all()
    odd_x, odd_soft = mixer(x[:3], y[:3])
    assert torch.equal(odd_x, x[:3]) and torch.allclose(odd_soft.max(1).values, torch.full((3,), 0.9 + 0.1 / 3))


@needs_dali
def test_abandoned_epoch_does_not_leak_batches_into_the_next(clip_shards):
    m, out = clip_shards
    ds = open_dataset(m, out, role="train")
    loader = Loader(ds, cfg(False), backend="dali")
    next(iter(loader.epoch(0)))  # stop after one batch; DALI has prefetched more
    full = [b["keys"] for b in loader.epoch(0)]
    assert full == [["v0", "v1"], ["v2", "v3"], ["v4"]]
    assert [b["keys"] for b in loader.epoch(1)] == full  # eval order does not depend on the epoch


def _scrambled_copy(out, tmp_path):
    """A copy of the shard folder whose first training tar has its clips' bytes scrambled (the
    .info records kept: a scrambled record is caught when the set is opened)."""
    import shutil

    from preprocess.shards.reader import read_index

    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    tar = broken / "train-00000.tar"
    data = bytearray(tar.read_bytes())
    for parts in read_index(tar.with_suffix(".idx"), len(data)).values():
        off, size = parts["webm"]
        for i in range(off, off + size, 7):
            data[i] ^= 0x5A
    tar.write_bytes(bytes(data))
    return broken


@needs_dali
def test_corrupt_sample_in_dali_names_the_shard(clip_shards, tmp_path):
    m, out = clip_shards
    broken = _scrambled_copy(out, tmp_path)
    with pytest.raises(ShardError, match="train-00000.tar"):
        list(Loader(open_dataset(m, broken, role="train"), cfg(False), backend="dali").epoch(0))


@pytest.mark.gpu
def test_small_clips_on_a_gpu_decode_on_the_cpu(clip_shards):
    m, out = clip_shards
    ds = open_dataset(m, out, role="train")
    cpu = list(Loader(ds, cfg(False), backend="dali").epoch(0))
    loader = Loader(ds, cfg(False), backend="dali", device_id=0)
    gpu = list(loader.epoch(0))
    assert loader.decode_on == "cpu"  # 64 px clips are under NVDEC's minimum: decoded on the CPU, with a notice
    for a, b in zip(cpu, gpu):
        assert torch.equal(a["pixels"], b["pixels"].cpu())


@pytest.mark.parametrize("backend", [pytest.param("dali", marks=needs_dali), "torch"])
def test_voxceleb_style_crop_before_resizing(clip_shards, backend):
    m, out = clip_shards
    ds = open_dataset(m, out, role="train")
    plain = next(iter(Loader(ds, LoaderConfig(batch_size=2, train=False, size=32, frames=8, stride=2), backend=backend).epoch(0)))
    cropped = next(
        iter(Loader(ds, LoaderConfig(batch_size=2, train=False, size=32, frames=8, stride=2, crop=(0, 16, 32, 32)), backend=backend).epoch(0))
    )
    assert cropped["pixels"].shape == plain["pixels"].shape == (2, 2, 3, 8, 32, 32)
    assert not torch.allclose(cropped["pixels"], plain["pixels"], atol=0.1)
    if backend == "dali":
        ref = next(
            iter(Loader(ds, LoaderConfig(batch_size=2, train=False, size=32, frames=8, stride=2, crop=(0, 16, 32, 32)), backend="torch").epoch(0))
        )
        assert (ref["pixels"] - cropped["pixels"]).abs().mean() < 0.05  # the same region on both backends


@pytest.fixture(scope="module")
def coded_shards(tmp_path_factory):
    """Clips whose frame t is a flat grey of level 5*t (MJPEG at q 2: no drift between frames),
    so decoded pixels tell the frame index."""
    tmp = tmp_path_factory.mktemp("coded")
    raw = tmp / "raw"
    raw.mkdir()
    rows = ["path,label,split"]
    for i, n in enumerate((13, 30, 47)):
        frames = np.repeat((5 * np.arange(n, dtype=np.uint8))[:, None, None, None], 64, axis=1).repeat(64, axis=2).repeat(3, axis=3)
        write_video(raw / f"c{i}.avi", frames, codec="mjpeg")
        rows.append(f"c{i}.avi,a,train")
    (raw / "list.csv").write_text("\n".join(rows) + "\n")
    raw_manifest = json.loads(json.dumps(_video_manifest(tmp).to_dict()))
    raw_manifest["preprocess"].update(codec="mjpeg", quality=2)
    m = parse_manifest(raw_manifest, tmp / "coded.json")
    run_shards(m, raw, tmp / "out")
    finalize(m, tmp / "out")
    return m, tmp / "out"


def _frame_ids(clip_CTHW, cfg_):
    mean = torch.tensor(cfg_.mean).view(3, 1, 1, 1)
    std = torch.tensor(cfg_.std).view(3, 1, 1, 1)
    grey = ((clip_CTHW * std + mean) * 255).mean(dim=(0, 2, 3))
    return torch.round(grey / 5).long().tolist()


@pytest.mark.parametrize("backend", [pytest.param("dali", marks=needs_dali), "torch"])
@pytest.mark.parametrize("train", [True, False])
def test_decoded_frames_are_exactly_the_planned_indices(coded_shards, backend, train):
    m, out = coded_shards
    ds = open_dataset(m, out, role="train")
    c = cfg(train, augment=Augment.off())
    loader = Loader(ds, c, backend=backend)
    for epoch in (0, 1):
        for plan, batch in zip(loader.batches(epoch), loader.epoch(epoch)):
            for j, pos in enumerate(plan.positions):
                n = int(ds.frames[pos])
                starts = np.atleast_1d(plan.starts[j])
                clips = [batch["pixels"][j]] if train else list(batch["pixels"][j])
                for start, clip in zip(starts, clips):
                    assert _frame_ids(clip, c) == clip_indices(int(start), n, 8, 2).tolist()


@pytest.mark.parametrize("backend", [pytest.param("dali", marks=needs_dali), "torch"])
def test_augmentation_depends_on_epoch_and_rank_not_on_history(clip_shards, backend):
    m, out = clip_shards
    ds = open_dataset(m, out, role="train")
    c = cfg(True)  # the full reference recipe
    running = Loader(ds, c, backend=backend)
    for epoch in range(3):
        list(running.epoch(epoch))
    continued = list(running.epoch(3))
    resumed = list(Loader(ds, c, backend=backend).epoch(3))  # a fresh loader, as after a restart
    assert all(torch.equal(a["pixels"], b["pixels"]) for a, b in zip(continued, resumed))
    assert not torch.equal(continued[0]["pixels"], list(running.epoch(2))[0]["pixels"])
    decoded = torch.randint(0, 256, (2, 8, 64, 64, 3), dtype=torch.uint8)
    ranks = [BatchAugment(c, video=True)(decoded, epoch_generator(c.seed, 0, r)) for r in (0, 1)]
    assert not torch.equal(*ranks)


@needs_dali
@pytest.mark.parametrize("aug", [Augment.image(), Augment.mae_image()], ids=["crop", "rrc"])
def test_image_training_graph_is_built_once_and_its_epochs_repeat(image_shards, aug):
    m, out = image_shards
    ds = open_dataset(m, out, role="train")
    c = LoaderConfig(batch_size=4, train=True, size=64, image_resize=72, augment=aug)
    running = Loader(ds, c, backend="dali")
    first = list(running.epoch(0))
    pipe = running._pipe
    second = list(running.epoch(1))
    assert running._pipe is pipe  # no rebuild per epoch: the crops come from the loader's generator
    again = list(Loader(ds, c, backend="dali").epoch(1))  # a fresh loader, as after a restart
    assert all(torch.equal(a["pixels"], b["pixels"]) for a, b in zip(second, again))
    assert not torch.equal(first[0]["pixels"], second[0]["pixels"])


@needs_dali
def test_dali_random_resized_crop_is_the_loaders_planned_box(image_shards):
    import cv2

    from pipelines.augment import rrc_box

    m, out = image_shards
    ds = open_dataset(m, out, role="train")
    aug = Augment(randaugment=None, rrc_scale=(0.2, 1.0), flip=0.0, erase=0.0)
    c = LoaderConfig(batch_size=4, train=True, size=64, image_resize=64, augment=aug)
    gen = torch.Generator().manual_seed(int(np.random.default_rng([c.seed, 0, 4000]).integers(2**62)))
    mean, std = np.array(c.mean) * 255, np.array(c.std) * 255
    side = m.preprocess.size
    for batch in Loader(ds, c, backend="dali").epoch(0):
        for key, got in zip(batch["keys"], batch["pixels"]):
            img = cv2.cvtColor(cv2.imdecode(ds.reader.get(key, ds.media_ext), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
            assert img.shape[:2] == (side, side)
            t, left, h, w = rrc_box(side, side, aug.rrc_scale, aug.rrc_ratio, gen)
            want = cv2.resize(img[t : t + h, left : left + w], (64, 64), interpolation=cv2.INTER_LINEAR if h < 64 else cv2.INTER_AREA)
            want = torch.from_numpy(((want - mean) / std).transpose(2, 0, 1)).float()
            assert (got - want).abs().mean() < 0.1, key  # same box; resize filters differ slightly


@needs_dali
def test_kept_batches_stay_valid_after_later_runs(clip_shards):
    m, out = clip_shards
    ds = open_dataset(m, out, role="train")
    kept = list(Loader(ds, cfg(False), backend="dali").epoch(0))  # zero-copy: the tensors hold DALI's buffers
    for a, b in zip(kept, Loader(ds, cfg(False), backend="dali").epoch(0)):
        assert torch.equal(a["pixels"], b["pixels"])


@needs_dali
def test_a_gpu_decoding_failure_blames_the_shard_only_if_the_cpu_fails_too(clip_shards, tmp_path):
    from pipelines.loader import GpuDecodeError

    m, out = clip_shards
    loader = Loader(open_dataset(m, out, role="train"), cfg(False), backend="dali")
    batch = loader.batches(0)[0]
    loader.decode_on = "mixed"  # as on a GPU
    err = loader._decode_failure(batch, RuntimeError("CUDA error: an illegal memory access was encountered"))
    assert isinstance(err, GpuDecodeError) and "decode on the CPU" in str(err) and "s4d doctor" in str(err)
    broken = _scrambled_copy(out, tmp_path)
    loader = Loader(open_dataset(m, broken, role="train"), cfg(False), backend="dali")
    loader.decode_on = "mixed"
    batch = next(b for b in loader.batches(0) if any(loader.ds.reader.locations[loader.ds.keys[p]].shard == 0 for p in b.positions))
    err = loader._decode_failure(batch, RuntimeError("decoder error"))
    assert isinstance(err, ShardError) and "train-00000.tar (sample" in str(err)


def test_where_dali_decodes():
    from pipelines.probe import GpuDecode, decode_place

    fine = GpuDecode(images=None, clips=None)
    assert decode_place(None, True, 160, None) == ("cpu", None)
    assert decode_place(0, True, 160, fine) == ("mixed", None)
    assert decode_place(0, False, 64, fine) == ("mixed", None)  # nvJPEG has no such minimum
    place, why = decode_place(0, True, 64, fine)
    assert place == "cpu" and "64 px" in why and "128" in why
    place, why = decode_place(1, True, 160, GpuDecode(images=None, clips="RuntimeError: libnvcuvid.so not found"))
    assert place == "cpu" and "libnvcuvid" in why and "GPU 1" in why
    assert decode_place(0, False, 160, GpuDecode(images="RuntimeError: CUDA driver too old", clips="x"))[0] == "cpu"


def test_dali_threads_default_to_the_cores_per_rank(monkeypatch):
    import os

    from pipelines.loader import default_threads

    cores = len(os.sched_getaffinity(0))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    assert default_threads() == max(2, cores)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(4 * cores))
    assert default_threads() == 2
    with pytest.raises(ValueError, match="num_threads"):
        LoaderConfig(num_threads=0)


@needs_dali
def test_taking_exactly_an_epochs_batches_keeps_the_graph(clip_shards):
    """JointLoader and pre-training take exactly the batches they need and never come back for
    the end of the generator: the graph must still be drained, reset and reused."""
    m, out = clip_shards
    ds = open_dataset(m, out, role="train")
    loader = Loader(ds, cfg(True), backend="dali")
    n = len(loader.batches(0))

    def take(epoch):
        it = loader.epoch(epoch)
        got = [next(it) for _ in range(n)]
        it.close()
        return got

    take(0)
    pipe = loader._pipe
    again = take(1)
    assert pipe is not None and loader._pipe is pipe
    fresh = list(Loader(ds, cfg(True), backend="dali").epoch(1))
    assert all(torch.equal(a["pixels"], b["pixels"]) for a, b in zip(again, fresh))


def test_a_clip_that_decodes_short_is_an_error_not_padding(tmp_path):
    from pipelines.torch_fallback import decode_clip
    from preprocess.shards.encoding import encode_clip

    data = np.frombuffer(encode_clip(moving_square(6, 32, 32), 25.0, "vp9", 31), np.uint8)
    assert decode_clip(data, np.array([0, 2, 5])).shape == (3, 32, 32, 3)
    with pytest.raises(ValueError, match="decodes to 6 frames, frame 9 was asked for"):
        decode_clip(data, np.array([0, 3, 6, 9]))


@pytest.mark.parametrize("backend", [pytest.param("dali", marks=needs_dali), "torch"])
def test_training_on_a_shard_zeroed_in_place_names_it(clip_shards, tmp_path, backend):
    """Same size, data gone (the cheap checks on open cannot see it): decoding must fail naming
    the shard, never train on padded or blank clips."""
    import shutil

    m, out = clip_shards
    broken = Path(shutil.copytree(out, tmp_path / "zeroed"))
    tar = broken / "train-00000.tar"
    data = tar.read_bytes()
    a, b = len(data) // 3, len(data) - 1024
    tar.write_bytes(data[:a] + bytes(b - a) + data[b:])
    with pytest.raises(ShardError, match="train-00000.tar"):
        list(Loader(open_dataset(m, broken, role="train"), cfg(True), backend=backend).epoch(0))


def test_the_cores_per_process_follow_cgroup_quotas_slurm_and_ranks(tmp_path):
    import os

    from preprocess.machine import available_cpus, cpus_per_process

    mask = len(os.sched_getaffinity(0))
    none = tmp_path / "none"
    none.mkdir()
    assert available_cpus({}, none) == (mask, f"{mask} in the affinity mask")
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cpu.max").write_text("50000 100000\n")  # half a core
    assert available_cpus({}, v2)[0] == 1 and "cgroup quota 0.5 cores" in available_cpus({}, v2)[1]
    (v2 / "cpu.max").write_text("max 100000\n")
    assert available_cpus({}, v2)[0] == mask
    v1 = tmp_path / "v1" / "cpu"
    v1.mkdir(parents=True)
    (v1 / "cpu.cfs_quota_us").write_text("100000\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    assert available_cpus({}, v1.parent)[0] == 1
    assert available_cpus({"SLURM_CPUS_PER_TASK": "1"}, none) == (1, f"{mask} in the affinity mask" + (", SLURM_CPUS_PER_TASK=1" if mask > 1 else ""))
    cores, why = cpus_per_process({"LOCAL_WORLD_SIZE": str(2 * mask)}, none)
    assert cores == 1 and f"shared by {2 * mask} ranks" in why


def test_torch_threads_are_lowered_to_the_cores_unless_the_user_chose_them():
    import torch

    from s4d.runtime.device import fit_torch_threads

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert fit_torch_threads(1, {}) == "torch 1 threads (was 2)" and torch.get_num_threads() == 1
        assert fit_torch_threads(4, {}) == "torch 1 threads"  # a lower choice is kept
        torch.set_num_threads(2)
        assert fit_torch_threads(1, {"OMP_NUM_THREADS": "2"}) == "torch 2 threads (OMP_NUM_THREADS=2)"
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_shard_workers_default_to_the_cores_and_at_most_four_on_cuda(monkeypatch):
    from preprocess.machine import available_cpus
    from preprocess.run import default_workers

    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    cores = available_cpus({})[0]
    assert default_workers("cpu")[0] == cores
    assert default_workers("cuda") == (min(4, cores), available_cpus({})[1] + "; at most 4 on CUDA")
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    assert default_workers("cpu")[0] == 1 and default_workers("cuda")[0] == 1
