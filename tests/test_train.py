"""Training building blocks on the debug model and shards written by the preprocessing code."""

import math

import numpy as np
import pytest
import torch

from pipelines import Augment, JointLoader, Loader, LoaderConfig, open_dataset
from pipelines.mixing import BatchMixer
from preprocess.manifest import parse_manifest
from preprocess.run import finalize, run_shards
from s4d import build_model
from s4d.train import NonFiniteLoss, OptimConfig, build_optimizer, build_scheduler, predict, scores, train_epoch

from .media_factory import moving_square, write_image, write_video


def test_uar_war_by_hand():
    labels = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    preds = np.array([0, 0, 0, 1, 1, 0, 2, 2])
    s = scores(labels, preds, 4)
    assert s["war"] == pytest.approx(6 / 8)
    assert s["uar"] == pytest.approx((3 / 4 + 1 / 2 + 1) / 3)  # class 3 absent: not averaged
    assert s["recall"][:3] == pytest.approx([0.75, 0.5, 1.0]) and math.isnan(s["recall"][3])
    assert s["confusion"][0] == [3, 1, 0, 0] and s["count"] == 8
    with pytest.raises(ValueError, match="outside"):
        scores(np.array([5]), np.array([0]), 4)


def test_layer_decay_and_schedule():
    model = build_model("s4d", "debug")
    opt = build_optimizer(model, OptimConfig(), global_batch=64)
    scales = sorted({g["lr_scale"] for g in opt.param_groups})
    assert len(scales) >= 5 and scales[-1] == 1.0 and scales[0] < 0.5  # embeddings learn slowest
    for g in opt.param_groups:
        for p in g["params"]:
            if p.ndim <= 1:
                assert g["weight_decay"] == 0.0  # norms, biases, q/v biases
    head = next(g for g in opt.param_groups if any(p is model.head["video"].weight for p in g["params"]))
    assert head["lr_scale"] == 1.0 and head["weight_decay"] == 0.05
    sched = build_scheduler(opt, OptimConfig(warmup_epochs=1), epochs=4, steps_per_epoch=10)
    lr = []
    for step in range(41):
        sched.step_update(step)
        lr.append(head["lr"])
    assert lr[0] == pytest.approx(1e-8) and max(lr) == pytest.approx(8e-5, rel=1e-3)  # 4e-5 x 64/32
    assert np.argmax(lr) == 10 and lr[-1] < 1e-6


def _manifest(tmp, name, modality, classes, **extra):
    raw = {"name": name, "modality": modality, "classes": classes, "layout": {"adapter": "csv", "options": {"csv": "list.csv"}},
           "partitions": ["train", "test"], "folds": {"main": {"train": ["train"], "test": ["test"]}}, **extra}
    return parse_manifest(raw, tmp / f"{name}.json")


@pytest.fixture(scope="module")
def colour_task(tmp_path_factory):
    """An easy task: the moving square is warm (class 0) or cold (class 1)."""
    tmp = tmp_path_factory.mktemp("colour")
    raw = tmp / "raw"
    raw.mkdir()
    rows = ["path,label,split"]
    for i in range(16):
        clip = moving_square(12, 64, 64, seed=i)
        if i % 2:
            clip = clip[..., ::-1].copy()  # cold: swap red and blue
        write_video(raw / f"v{i}.webm", clip)
        rows.append(f"v{i}.webm,{'warm' if i % 2 == 0 else 'cold'},{'train' if i < 12 else 'test'}")
    (raw / "list.csv").write_text("\n".join(rows) + "\n")
    m = _manifest(tmp, "colour", "video", ["warm", "cold"], preprocess={"align": False, "size": 64}, clip={"frames": 4, "stride": 2})
    run_shards(m, raw, tmp / "out")
    finalize(m, tmp / "out")
    return m, tmp / "out"


def test_fine_tuning_learns_the_easy_task_and_the_test_protocol_scores_it(colour_task):
    torch.manual_seed(0)
    m, out = colour_task
    lc = LoaderConfig(batch_size=4, train=True, size=64, frames=4, stride=2, augment=Augment(rand_n=0, erase=0.0))
    train = Loader(open_dataset(m, out, role="train"), lc, backend="torch")
    model = build_model("s4d", "debug", video_classes=2)
    opt = build_optimizer(model, OptimConfig(base_lr=2e-3, layer_decay=1.0, weight_decay=0.0), global_batch=32)
    losses, step = [], 0
    for epoch in range(8):
        stats, step = train_epoch(model, (("video", b) for b in train.epoch(epoch)), opt, step=step, alpha=1.0)
        losses.append(stats.loss)
    assert step == 8 * 3 and losses[-1] < 0.5 * losses[0]
    test = Loader(open_dataset(m, out, role="test"), LoaderConfig(batch_size=4, train=False, size=64, frames=4, stride=2), backend="torch")
    pred = predict(model, test.epoch(0), "video")
    assert pred["probs"].shape == (4, 2) and np.allclose(pred["probs"].sum(1), 1, atol=1e-5)
    s = scores(pred["labels"], pred["probs"].argmax(1), 2)
    assert s["war"] >= 0.75  # chance is 0.5


def test_joint_epoch_with_mixup_and_image_head(colour_task, tmp_path):
    m, out = colour_task
    raw = tmp_path / "raw"
    raw.mkdir()
    rows = ["path,label,split"]
    for i in range(8):
        write_image(raw / f"i{i}.jpg", moving_square(1, 80, 80, seed=i)[0])
        rows.append(f"i{i}.jpg,{['neutral', 'happy'][i % 2]},train")
    (raw / "list.csv").write_text("\n".join(rows) + "\n")
    mi = _manifest(tmp_path, "stills", "image", ["neutral", "happy"], preprocess={"align": False, "size": 72, "codec": "jpeg"})
    run_shards(mi, raw, tmp_path / "out")
    finalize(mi, tmp_path / "out")
    video = Loader(open_dataset(m, out, role="train"), LoaderConfig(batch_size=4, train=True, size=64, frames=4, stride=2), backend="torch")
    image = Loader(open_dataset(mi, tmp_path / "out", role="train"),
                   LoaderConfig(batch_size=4, train=True, size=64, image_resize=64, class_balanced=True, augment=Augment.image()),
                   backend="torch")
    joint = JointLoader(video, image, proportion=0.5)
    model = build_model("s4d", "debug", video_classes=2, image_classes=2)
    opt = build_optimizer(model, OptimConfig(), global_batch=4)
    mixers = {"video": BatchMixer(2), "image": BatchMixer(2)}
    before = model.head["image"].weight.detach().clone()
    stats, step = train_epoch(model, joint.epoch(0), opt, mixers=mixers, alpha=0.5)
    assert stats.steps == 3 + 1 and step == 4 and math.isfinite(stats.loss)
    assert not torch.equal(before, model.head["image"].weight)  # the image head trained too


def test_non_finite_loss_names_step_and_keys():
    model = build_model("vit", "debug", video_classes=2)
    with torch.no_grad():
        model.head["video"].weight.fill_(float("nan"))
    batch = {"pixels": torch.randn(2, 3, 4, 64, 64), "labels": torch.tensor([0, 1]), "keys": ["a", "b"]}
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(NonFiniteLoss, match=r"at step 7 \(video batch, keys \['a', 'b'\]\)"):
        train_epoch(model, [("video", batch)], opt, step=7)
