"""Training building blocks on the debug model and shards written by the preprocessing code."""

import math

import numpy as np
import pytest
import torch

from pipelines import Augment, JointLoader, Loader, LoaderConfig, open_dataset
from pipelines.mixing import BatchMixer
from preprocess.manifest import parse_manifest
from preprocess.run import run_shards
from preprocess.shards.folder import finalize
from s4d import build_model
from s4d.eval import predict, scores
from s4d.train import NonFiniteLoss, OptimConfig, build_mae_optimizer, build_optimizer, build_scheduler, train_epoch

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

    def scale_of(param):
        return next(g["lr_scale"] for g in opt.param_groups if any(p is param for p in g["params"]))

    depth = model.config.encoder.depth  # BEiT/MAE rule: head 1, last block 0.75, embedding 0.75^(depth+1)
    assert scale_of(model.blocks[depth - 1].attn.qkv.weight) == pytest.approx(0.75)
    assert scale_of(model.blocks[depth - 1].moae.experts.w1) == pytest.approx(0.75)
    assert scale_of(model.blocks[0].mlp.fc1.weight) == pytest.approx(0.75**depth)
    assert scale_of(model.patch_embed.proj.weight) == pytest.approx(0.75 ** (depth + 1))
    assert scale_of(model.fc_norm.weight) == 1.0
    sched = build_scheduler(opt, OptimConfig(warmup_epochs=1), epochs=4, steps_per_epoch=10, global_batch=64)
    embed = next(g for g in opt.param_groups if any(p is model.patch_embed.proj.weight for p in g["params"]))
    lr = []
    for step in range(41):
        sched.step_update(step)
        lr.append(head["lr"])
        if step == 5:
            assert embed["lr"] == pytest.approx(head["lr"] * 0.75 ** (depth + 1))  # layer scales ride on the schedule
    assert lr[0] == 0.0 and max(lr) == pytest.approx(8e-5, rel=1e-3)  # warm-up from 0 to 4e-5 x 64/32
    assert np.argmax(lr) == 10 and lr[-1] == pytest.approx(2.5e-7)  # the floor 1.25e-7 scales with the batch too


def _decayed(model, groups):
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = sorted(names[id(p)] for g in groups if g["weight_decay"] > 0 for p in g["params"])
    listed = sorted(names[id(p)] for g in groups for p in g["params"])
    assert listed == sorted(names.values())  # every parameter in exactly one group
    assert all(g["weight_decay"] in (0.0, 0.05) for g in groups)
    return decayed


def test_fine_tuning_weight_decay_by_name():
    """AdamW decays matrices only: no 1-D tensor, no bias (the stacked expert biases b1/b2 are
    2-D), no pos_embed."""
    per_block = ["attn.proj.weight", "attn.qkv.weight", "mlp.fc1.weight", "mlp.fc2.weight"]
    experts = ["experts.w1", "experts.w2", "router.gate.weight", "router.noise.weight"]
    heads = ["head.image.weight", "head.video.weight", "patch_embed.proj.weight"]
    model = build_model("s4d", "debug")
    expected = [f"blocks.{i}.{n}" for i in range(4) for n in per_block] + [f"blocks.{i}.moae.{n}" for i in (2, 3) for n in experts]
    assert _decayed(model, build_optimizer(model, OptimConfig(), 32).param_groups) == sorted(expected + heads)
    model = build_model("vit-moe", "debug")
    dense = [f"blocks.{i}.{n}" for i in (0, 1) for n in per_block] + [f"blocks.{i}.{n}" for i in (2, 3) for n in per_block[:2]]
    expected = dense + [f"blocks.{i}.mlp.{n}" for i in (2, 3) for n in experts]
    assert _decayed(model, build_optimizer(model, OptimConfig(), 32).param_groups) == sorted(expected + heads)
    assert "pos_embed" not in dict(model.named_parameters())  # a fixed table (buffer); excluded by name if it ever learns


def test_mae_weight_decay_by_name():
    """Pre-training: no decay on biases and LayerNorm parameters; q/v biases and the mask token
    are decayed (the reference's rule: name ``*.bias`` or module class LayerNorm)."""
    from s4d import build_mae
    from s4d.train.optim import mae_param_groups

    model = build_mae("debug")
    per_block = ["attn.proj.weight", "attn.q_bias", "attn.qkv.weight", "attn.v_bias", "mlp.fc1.weight", "mlp.fc2.weight"]
    expected = [f"{part}.blocks.{i}.{n}" for part in ("encoder", "decoder") for i in range(4) for n in per_block]
    expected += ["decoder.head.weight", "encoder.patch_embed.proj.weight", "encoder_to_decoder.weight", "mask_token"]
    groups = mae_param_groups(model, 0.05)
    assert _decayed(model, groups) == sorted(expected)
    opt = build_mae_optimizer(model, OptimConfig(base_lr=1.6e-3, reference_batch=512, betas=(0.9, 0.95)), 384)
    assert opt.defaults["lr"] == pytest.approx(1.2e-3) and opt.defaults["betas"] == (0.9, 0.95)  # the paper's 2 x 192 samples


def test_loss_weight_one_on_both_tasks_unless_alpha():
    from s4d.cli.options import train_config
    from s4d.train.config import TrainConfig

    model = build_model("vit-mtl", "debug", video_classes=2, image_classes=2)
    video = ("video", {"pixels": torch.randn(2, 3, 4, 64, 64), "labels": torch.tensor([0, 1]), "keys": ["a", "b"]})
    image = ("image", {"pixels": torch.randn(2, 3, 64, 64), "labels": torch.tensor([1, 0]), "keys": ["c", "d"]})
    frozen = torch.optim.SGD(model.parameters(), lr=0.0)

    def loss(batch, **kw):
        return train_epoch(model, [batch], frozen, **kw)[0].loss

    ce = {task: torch.nn.functional.cross_entropy(model(b["pixels"], task=task), b["labels"]).item() for task, b in (video, image)}
    assert loss(video) == pytest.approx(ce["video"], rel=1e-5) and loss(image) == pytest.approx(ce["image"], rel=1e-5)
    assert loss(video, alpha=0.3) == pytest.approx(0.3 * ce["video"], rel=1e-5)
    assert loss(image, alpha=0.3) == pytest.approx(0.7 * ce["image"], rel=1e-5)
    opts = dict(
        manifest="m.json",
        out=None,
        fold=None,
        variant="s4d",
        size="debug",
        epochs=1,
        video_batch=1,
        image_batch=1,
        sfer=False,
        init=None,
        data_root=None,
        seed=0,
        lr=4e-5,
        backend="torch",
        amp="auto",
        compile_=False,
        accum=1,
        alpha=None,
        select="last",
        val_fraction=0.1,
        select_metric="uar",
        threads=None,
        tensorboard=True,
        wandb=None,
    )
    assert train_config(**opts).alpha is None and train_config(**{**opts, "alpha": 0.3}).alpha == 0.3
    with pytest.raises(ValueError, match="alpha must be in"):
        TrainConfig(manifest="m", out="o", alpha=1.5)


def _manifest(tmp, name, modality, classes, **extra):
    raw = {
        "name": name,
        "modality": modality,
        "classes": classes,
        "layout": {"adapter": "csv", "options": {"csv": "list.csv"}},
        "partitions": ["train", "test"],
        "folds": {"main": {"train": ["train"], "test": ["test"]}},
        **extra,
    }
    return parse_manifest(raw, tmp / f"{name}.json")


def make_stills(tmp, shards, count):
    """An image (SFER) dataset of ``count`` generated stills, preprocessed into ``shards``."""
    raw = tmp / "raw_stills"
    raw.mkdir()
    rows = ["path,label,split"]
    for i in range(count):
        write_image(raw / f"i{i}.jpg", moving_square(1, 80, 80, seed=i)[0])
        rows.append(f"i{i}.jpg,{['neutral', 'happy'][i % 2]},train")
    (raw / "list.csv").write_text("\n".join(rows) + "\n")
    m = _manifest(tmp, "stills", "image", ["neutral", "happy"], preprocess={"align": False, "size": 72, "codec": "jpeg"})
    run_shards(m, raw, shards)
    finalize(m, shards)
    return m


@pytest.fixture(scope="module")
def colour_task(tmp_path_factory):
    return make_colour_task(tmp_path_factory.mktemp("colour"))


def make_colour_task(tmp):
    """An easy task: the moving square is warm (class 0) or cold (class 1); (manifest, shards)."""
    raw = tmp / "raw"
    raw.mkdir(parents=True)
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
    lc = LoaderConfig(batch_size=4, train=True, size=64, frames=4, stride=2, augment=Augment(randaugment=None, erase=0.0))
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
    mi = make_stills(tmp_path, tmp_path / "out", 8)
    video = Loader(open_dataset(m, out, role="train"), LoaderConfig(batch_size=4, train=True, size=64, frames=4, stride=2), backend="torch")
    image = Loader(
        open_dataset(mi, tmp_path / "out", role="train"),
        LoaderConfig(batch_size=4, train=True, size=64, image_resize=64, class_balanced=True, augment=Augment.image()),
        backend="torch",
    )
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
    with pytest.raises(NonFiniteLoss, match=r"at step 7 \(batch 0 of this epoch: video, keys \['a', 'b'\]\)"):
        train_epoch(model, [("video", batch)], opt, step=7)
    good = build_model("vit", "debug", video_classes=2)
    bad = {**batch, "keys": ["c", "d"]}
    seq = [("video", batch)] * 2 + [("video", {**bad, "pixels": torch.full_like(batch["pixels"], float("nan"))})] + [("video", batch)]
    with pytest.raises(NonFiniteLoss, match=r"batch 2 of this epoch: video, keys \['c', 'd'\]"):
        train_epoch(good, seq, torch.optim.SGD(good.parameters(), lr=0.1), check_every=4)  # found at the deferred check


def test_gradient_accumulation_equals_one_big_batch():
    torch.manual_seed(0)
    a = build_model("vit", "debug", video_classes=2)
    b = build_model("vit", "debug", video_classes=2)
    b.load_state_dict(a.state_dict())
    x, y = torch.randn(4, 3, 4, 64, 64), torch.tensor([0, 1, 1, 0])
    whole = [("video", {"pixels": x, "labels": y, "keys": list("abcd")})]
    halves = [("video", {"pixels": x[i : i + 2], "labels": y[i : i + 2], "keys": list("abcd")[i : i + 2]}) for i in (0, 2)]
    _, s1 = train_epoch(a, whole, torch.optim.SGD(a.parameters(), lr=0.1))
    _, s2 = train_epoch(b, halves, torch.optim.SGD(b.parameters(), lr=0.1), accum=2)
    assert s1 == s2 == 1
    for (k, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(p, q, atol=1e-5, rtol=1e-4, msg=k)


def _run_cfg(m, shards, tmp, **kw):
    import json as _json

    from s4d.train.config import TrainConfig

    path = tmp / "colour.json"
    path.write_text(_json.dumps(m.to_dict()))
    base = dict(
        manifest=str(path),
        out=str(tmp / "run"),
        size="debug",
        epochs=2,
        video_batch=4,
        sfer=False,
        augment=False,
        data_root=str(shards.parent),
        optim=OptimConfig(base_lr=1e-3, warmup_epochs=0),
        backend="torch",
    )
    base.update(kw)
    return TrainConfig(**base)


def test_train_writes_outputs_and_resume_reproduces_the_uninterrupted_run(colour_task, tmp_path):
    import json
    import shutil

    import pyarrow.parquet as pq

    from s4d import load_model
    from s4d.train.finetune import train

    m, out = colour_task
    data = tmp_path / "data"
    shutil.copytree(out, data / "colour")  # the run finds shards under DATA_ROOT/<manifest name>
    straight = _run_cfg(m, data / "colour", tmp_path, out=str(tmp_path / "straight"), epochs=3)
    summary = train(straight, log=lambda *_: None)
    run = tmp_path / "straight"
    for name in ("config.json", "metrics.jsonl", "predictions.parquet", "confusion.png", "summary.json", "checkpoints/last.safetensors"):
        assert (run / name).is_file(), name
    assert [json.loads(x)["epoch"] for x in (run / "metrics.jsonl").read_text().splitlines()] == [0, 1, 2]
    preds = pq.read_table(run / "predictions.parquet").to_pydict()
    probs = np.stack([preds["p_warm"], preds["p_cold"]], axis=1)
    again = scores(np.asarray(preds["label"]), probs.argmax(1), 2)
    assert again["uar"] == summary["uar"] and again["war"] == summary["war"]  # summary = recomputation from predictions
    assert summary["selected_on"].startswith("last epoch") and summary["select"] == "last"
    assert summary["last"] == {"epoch": 2, "uar": summary["uar"], "war": summary["war"], "count": 4}  # side by side:
    assert summary["selected"] == {**summary["last"], "selected_on": "last epoch (not selected on test)"}  # the same here
    assert not (run / "selected").exists() and not (run / "checkpoints" / "best.safetensors").exists()
    meta = json.loads((run / "checkpoints" / "last.json").read_text())  # what s4d predict needs to prepare raw videos alike
    assert meta["input"] == {"stride": 2, "fps": 25.0, "crop": None, "align": False, "margin": 0.25, "geometry": "crop", "stored_size": 64}

    interrupted = _run_cfg(m, data / "colour", tmp_path, out=str(tmp_path / "resumed"), epochs=3)
    assert train(interrupted, stop_after_epochs=1, log=lambda *_: None) is None  # "killed" after epoch 1
    resumed = train(interrupted, log=lambda *_: None)
    a = load_model(run / "checkpoints/last.safetensors").state_dict()
    b = load_model(tmp_path / "resumed/checkpoints/last.safetensors").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # bit-identical weights
    assert resumed["uar"] == summary["uar"] and resumed["war"] == summary["war"]
    with pytest.raises(ValueError, match="different settings \\(epochs\\)"):
        train(_run_cfg(m, data / "colour", tmp_path, out=str(tmp_path / "resumed"), epochs=4), log=lambda *_: None)


def test_cross_validation_pools_folds(tmp_path):
    import json

    import pyarrow.parquet as pq
    from typer.testing import CliRunner

    from s4d.cli import app

    raw = tmp_path / "raw"
    raw.mkdir()
    rows = ["path,label,fold"]
    for i in range(9):
        clip = moving_square(8, 64, 64, seed=i)
        write_video(raw / f"v{i}.webm", clip if i % 2 == 0 else clip[..., ::-1].copy())
        rows.append(f"v{i}.webm,{'warm' if i % 2 == 0 else 'cold'},{'abc'[i % 3]}")
    (raw / "list.csv").write_text("\n".join(rows) + "\n")
    runner = CliRunner()
    res = runner.invoke(
        app,
        [
            "shards",
            "--csv",
            str(raw / "list.csv"),
            "--no-align",
            "--size",
            "64",
            "--frames",
            "4",
            "--stride",
            "2",
            "--data-root",
            str(tmp_path / "data"),
        ],
    )
    assert res.exit_code == 0, res.output
    manifest = tmp_path / "data" / "list" / "manifest.json"  # own data: the manifest lives beside its shards
    args = [
        "cv",
        "--manifest",
        str(manifest),
        "--size",
        "debug",
        "--epochs",
        "1",
        "--video-batch",
        "2",
        "--no-sfer",
        "--data-root",
        str(tmp_path / "data"),
        "--out",
        str(tmp_path / "cv"),
        "--backend",
        "torch",
    ]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "cv" / "summary.json").read_text())
    assert set(summary["folds"]) == {"a", "b", "c"} and summary["count"] == 9
    tables = [pq.read_table(tmp_path / "cv" / f"fold_{f}" / "predictions.parquet").to_pydict() for f in "abc"]
    labels = np.concatenate([t["label"] for t in tables])
    probs = np.concatenate([np.stack([t["p_cold"], t["p_warm"]], 1) for t in tables])
    pooled = scores(labels, probs.argmax(1), 2)
    assert pooled["uar"] == pytest.approx(summary["uar"]) and pooled["war"] == pytest.approx(summary["war"])
    assert summary["selected"] == {"selected_on": "last epoch of each fold", "uar": summary["uar"], "war": summary["war"], "count": 9}
    from .test_tracking import tensorboard_scalars

    pooled_tb, figures = tensorboard_scalars(tmp_path / "cv" / "tensorboard")  # the pooled result; each fold has its own
    assert pooled_tb["cv/uar"] == [(0, pytest.approx(summary["uar"]))] and "cv/confusion" in figures
    assert all((tmp_path / "cv" / f"fold_{f}" / "tensorboard").is_dir() for f in "abc")
    from s4d.checkpoint.hub_export import export_hub

    card = export_hub(tmp_path / "cv" / "fold_a", tmp_path / "upload").read_text()  # one fold's model, with the pooled scores
    assert f"| all folds pooled, last epochs | s4d cv: the predictions of every fold pooled | {100 * summary['uar']:.2f} |" in card
    assert '- name: "cv-fold_a"' in card and "fold `a`" in card
    res = runner.invoke(app, args)  # re-run: every fold is kept, only pooling runs
    assert res.exit_code == 0 and res.output.count("done before, kept") == 3
    res = runner.invoke(app, [*args[: args.index("--epochs") + 1], "2", *args[args.index("--epochs") + 2 :]])
    assert res.exit_code == 2 and "different settings (epochs)" in res.output  # kept folds must match the command

    import os
    import subprocess
    import sys

    ddp = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-port",
        "29521",
        "-m",
        "s4d",
        *[a if a != str(tmp_path / "cv") else str(tmp_path / "cv_ddp") for a in args],
    ]
    res = subprocess.run(ddp, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("fold a: training") == 1  # rank 0 speaks
    ddp_summary = json.loads((tmp_path / "cv_ddp" / "summary.json").read_text())
    assert ddp_summary["count"] == 9 and set(ddp_summary["folds"]) == {"a", "b", "c"}


def test_two_process_ddp_with_torchrun(colour_task, tmp_path):
    """Real DDP: torchrun starts 2 CPU processes (gloo); each trains on its half of every
    epoch, rank 0 writes; predictions of both ranks are pooled, each test video once."""
    import json
    import os
    import shutil
    import subprocess
    import sys

    import pyarrow.parquet as pq

    m, out = colour_task
    data = tmp_path / "data"
    shutil.copytree(out, data / "colour")
    (tmp_path / "colour.json").write_text(json.dumps(m.to_dict()))
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-port",
        "29517",
        "-m",
        "s4d",
        "train",
        "--manifest",
        str(tmp_path / "colour.json"),
        "--size",
        "debug",
        "--epochs",
        "2",
        "--video-batch",
        "2",
        "--no-sfer",
        "--data-root",
        str(data),
        "--out",
        str(tmp_path / "ddp"),
        "--backend",
        "torch",
        "--lr",
        "1e-3",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("epoch 2/2") == 1  # only rank 0 logs
    lines = [json.loads(x) for x in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == [0, 1] and lines[0]["steps"] == 3  # 12 train clips / 2 ranks / batch 2
    keys = pq.read_table(tmp_path / "ddp" / "predictions.parquet").column("key").to_pylist()
    assert sorted(keys) == ["v12", "v13", "v14", "v15"]  # every test video exactly once
    assert json.loads((tmp_path / "ddp" / "summary.json").read_text())["count"] == 4
    assert len(list((tmp_path / "ddp" / "tensorboard").glob("events.out.tfevents.*"))) == 1  # rank 0 tracks, alone


def test_eval_command_and_cross_task_mapping(colour_task, tmp_path):
    import json
    import shutil

    from typer.testing import CliRunner

    from s4d import save_checkpoint
    from s4d.cli import app
    from s4d.eval.evaluate import head_columns
    from s4d.models import model_config

    assert head_columns(("happy", "sad", "contempt"), ("neutral", "happiness", "sadness")) == [1, 2, None]
    m, out = colour_task
    data = tmp_path / "data"
    shutil.copytree(out, data / "colour")
    (tmp_path / "colour.json").write_text(json.dumps(m.to_dict()))
    cfg = model_config("s4d", "debug", video_classes=2, image_classes=3)
    import dataclasses

    cfg = dataclasses.replace(cfg, class_names={"video": ("warm", "cold"), "image": ("cold", "other", "warm")})
    model = build_model(cfg)
    ckpt = save_checkpoint(model, tmp_path / "m.safetensors")
    runner = CliRunner()
    base = ["eval", "--manifest", str(tmp_path / "colour.json"), "--checkpoint", str(ckpt), "--data-root", str(data), "--backend", "torch"]
    res = runner.invoke(app, [*base, "--out", str(tmp_path / "ev")])
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert summary["count"] == 4 and summary["task_head"] == "video" and (tmp_path / "ev" / "confusion.png").is_file()
    res = runner.invoke(app, [*base, "--task", "image", "--out", str(tmp_path / "ev_img")])  # image head on videos
    assert res.exit_code == 0, res.output
    cross = json.loads((tmp_path / "ev_img" / "summary.json").read_text())
    assert cross["task_head"] == "image" and cross["count"] == 4 and cross["excluded_no_matching_class"] == 0
    res = runner.invoke(app, [*base, "--task", "audio"])
    assert res.exit_code == 2 and "no 'audio' head" in res.output
    unnamed = save_checkpoint(build_model(model_config("s4d", "debug", video_classes=2, image_classes=2)), tmp_path / "u.safetensors")
    res = runner.invoke(app, [*base[:3], "--checkpoint", str(unnamed), *base[5:], "--task", "image"])
    assert res.exit_code == 2 and "has no class names" in res.output  # never map columns by position across tasks


def test_init_from_an_mae_checkpoint_reports_new_tensors(colour_task, tmp_path):
    import shutil

    from s4d import build_mae, save_checkpoint
    from s4d.train.finetune import train

    m, out = colour_task
    data = tmp_path / "data"
    shutil.copytree(out, data / "colour")
    mae = save_checkpoint(build_mae("debug"), tmp_path / "mae.safetensors")
    lines = []
    train(_run_cfg(m, data / "colour", tmp_path, epochs=1, init=str(mae)), log=lines.append)
    report = next(x for x in lines if "mae checkpoint" in x)
    import re

    new = int(re.search(r"(\d+) new \(", report)[1])
    assert new == 22  # fc_norm (2) + 2 heads (4) + 2 MoAE blocks x 8 tensors (16)
    assert "unused (" in report and "decoder." in report


def test_sigterm_stops_training_and_the_same_command_resumes(colour_task, tmp_path):
    import json
    import os
    import shutil
    import signal
    import subprocess
    import sys
    import time

    m, out = colour_task
    data = tmp_path / "data"
    shutil.copytree(out, data / "colour")
    (tmp_path / "colour.json").write_text(json.dumps(m.to_dict()))
    cmd = [
        sys.executable,
        "-m",
        "s4d",
        "train",
        "--manifest",
        str(tmp_path / "colour.json"),
        "--size",
        "debug",
        "--epochs",
        "40",
        "--video-batch",
        "4",
        "--no-sfer",
        "--data-root",
        str(data),
        "--out",
        str(tmp_path / "r"),
        "--backend",
        "torch",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    metrics = tmp_path / "r" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.is_file() and len(metrics.read_text().splitlines()) >= 2):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "re-run the same command" in err
    done = len(metrics.read_text().splitlines())
    assert 2 <= done < 40
    res = subprocess.run([*cmd[: cmd.index("--epochs") + 1], str(done + 1), *cmd[cmd.index("--epochs") + 2 :]], capture_output=True, text=True)
    assert res.returncode == 2 and "different settings (epochs)" in res.stderr  # a changed command does not silently resume
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0 and f"resuming from epoch {done}" in res.stdout
    assert [json.loads(x)["epoch"] for x in metrics.read_text().splitlines()] == list(range(40))


def test_pretrain_on_a_mixture_then_finetune_from_it(colour_task, tmp_path):
    import json
    import shutil

    from s4d import load_model
    from s4d.models import PretrainMAE
    from s4d.train.config import PretrainConfig
    from s4d.train.finetune import train
    from s4d.train.pretrain import pretrain

    m, out = colour_task
    data = tmp_path / "data"
    shutil.copytree(out, data / "colour")
    stills = make_stills(tmp_path, data / "stills", 6)
    (tmp_path / "colour.json").write_text(json.dumps(m.to_dict()))
    (tmp_path / "stills.json").write_text(json.dumps(stills.to_dict()))
    (tmp_path / "mix.json").write_text(
        json.dumps({"name": "mix", "sources": [{"manifest": "colour.json", "share": 0.5, "repeat": 2}, {"manifest": "stills.json", "share": 1.0}]})
    )
    cfg = PretrainConfig(
        mixture=str(tmp_path / "mix.json"),
        out=str(tmp_path / "pre"),
        size="debug",
        epochs=2,
        video_batch=2,
        image_batch=2,
        data_root=str(data),
        backend="torch",
    )
    lines = []
    assert pretrain(cfg, log=lines.append)
    assert "colour 3 batches, stills 3 batches per epoch" in lines[0]  # 12 clips / 2 x 0.5; 6 images / 2
    metrics = [json.loads(x) for x in (tmp_path / "pre" / "metrics.jsonl").read_text().splitlines()]
    assert [x["steps"] for x in metrics] == [6, 6] and all(math.isfinite(x["loss"]) for x in metrics)
    groups = torch.load(tmp_path / "pre" / "checkpoints" / "state.pt", weights_only=True)["optimizer"]["param_groups"]
    assert [g["weight_decay"] for g in groups] == [0.05, 0.0] and groups[0]["betas"] == (0.9, 0.95)
    assert groups[0]["initial_lr"] == pytest.approx(1.6e-3 * 2 * 2 / 512)  # 2 clips x 2 views per video step
    assert groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)  # cosine to 0 at the end
    from .test_tracking import tensorboard_scalars

    scalars, _ = tensorboard_scalars(tmp_path / "pre" / "tensorboard")
    assert [s for s, _ in scalars["train/loss"]] == list(range(1, 13))  # the reconstruction loss, per step
    assert [v for _, v in scalars["epoch/loss"]] == pytest.approx([x["loss"] for x in metrics])
    default = PretrainConfig(mixture="m", out="o")
    assert (default.video_batch, default.image_batch, default.optim.warmup_lr, default.optim.min_lr) == (48, 192, 1e-6, 0.0)
    mae = load_model(tmp_path / "pre" / "checkpoints" / "last.safetensors")
    assert isinstance(mae, PretrainMAE)
    lines = []
    train(_run_cfg(m, data / "colour", tmp_path, epochs=1, init=str(tmp_path / "pre/checkpoints/last.safetensors")), log=lines.append)
    assert any("mae checkpoint" in x and "22 new" in x for x in lines)


def test_ddp_resume_is_exact(colour_task, tmp_path):
    import json
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    m, out = colour_task
    data = tmp_path / "data"
    shutil.copytree(out, data / "colour")
    (tmp_path / "colour.json").write_text(json.dumps(m.to_dict()))
    job = Path(__file__).with_name("ddp_resume_job.py")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-port",
        "29519",
        str(job),
        str(tmp_path / "colour.json"),
        str(data),
        str(tmp_path / "runs"),
    ]
    res = subprocess.run(
        cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(job.parent.parent)}
    )
    assert res.returncode == 0, res.stderr[-3000:]
    result = json.loads(res.stdout.strip().splitlines()[-1])
    assert result["identical"] and result["losses"][0] == result["losses"][1]  # Mixup RNG restored per rank
    assert result["best_identical"] and result["ranks_agree"]  # select=val: same best, one held-out split on every rank
    assert result["rank_rngs_differ"]  # each rank its own stream (seed + rank), restored per rank


def test_signal_during_a_save_is_delivered_after_it():
    import os
    import signal

    from s4d.runtime.signals import stop_on_sigterm, uninterrupted

    old = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    try:
        stop_on_sigterm()
        done = []
        with pytest.raises(KeyboardInterrupt):
            with uninterrupted():
                os.kill(os.getpid(), signal.SIGINT)
                done.append("saved")  # still runs: the signal waits
        assert done == ["saved"]
    finally:
        signal.signal(signal.SIGINT, old[0])
        signal.signal(signal.SIGTERM, old[1])


def test_resume_refuses_mismatched_weights_and_state(colour_task, tmp_path):
    import json
    import shutil

    from s4d.train.finetune import train

    m, out = colour_task
    data = tmp_path / "data"
    shutil.copytree(out, data / "colour")
    cfg = _run_cfg(m, data / "colour", tmp_path, epochs=3)
    train(cfg, stop_after_epochs=2, log=lambda *_: None)
    sidecar = tmp_path / "run" / "checkpoints" / "last.json"
    meta = json.loads(sidecar.read_text())
    meta["epoch"] = 0  # as if the weights were older than the optimizer state
    sidecar.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"weights \(epoch 0\) and optimizer state \(epoch 1\) do not match"):
        train(cfg, log=lambda *_: None)


def test_step_loop_helpers_avoid_host_syncs_but_keep_meaning():
    from s4d.runtime.dist import process_group_backend
    from s4d.train.loop import _flag_last, one_hot

    y = torch.tensor([2, 0, 1, 2])
    assert torch.equal(one_hot(y, 3), torch.nn.functional.one_hot(y, 3).float())
    assert list(_flag_last("abc")) == [("a", False), ("b", False), ("c", True)] and list(_flag_last([])) == []
    assert process_group_backend(True) == "cpu:gloo,cuda:nccl" and process_group_backend(False) == "gloo"


def test_device_and_autocast_are_resolved_once_with_clear_errors():
    from s4d.runtime import autocast_dtype, resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    assert autocast_dtype("auto", torch.device("cpu")) is None and autocast_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    assert autocast_dtype("auto", torch.device("cuda", 0)) == torch.bfloat16 and autocast_dtype("off", torch.device("cuda", 0)) is None
    for bad, msg in (("gpu", "auto, cpu or cuda"), ("cpu:1", "auto, cpu or cuda")):
        with pytest.raises(ValueError, match=msg):
            resolve_device(bad)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            resolve_device("cuda:0")
    with pytest.raises(ValueError, match="amp"):
        autocast_dtype("fp16", torch.device("cpu"))


def test_ddp_gradient_accumulation_keeps_ranks_identical():
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    job = Path(__file__).with_name("ddp_accum_job.py")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29521", str(job)]
    res = subprocess.run(
        cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(job.parent.parent)}
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert json.loads(res.stdout.strip().splitlines()[-1]) == {"steps": 2, "agree": True}


def test_resume_survives_a_broken_save_and_refuses_other_data_or_backend(colour_task, tmp_path):
    """A kill or a full disk during a save leaves an unreadable state.pt.tmp: the next run sets
    it aside and continues from the last complete state; a planted state is one clear error;
    a resume on changed data, or with another loader backend, is refused with the difference."""
    import json
    import shutil

    from s4d.train.finetune import train

    m, out = colour_task
    data = tmp_path / "data"
    shutil.copytree(out, data / "colour")
    cfg = _run_cfg(m, data / "colour", tmp_path, epochs=3)
    assert train(cfg, stop_after_epochs=1, log=lambda *_: None) is None
    ckpt = tmp_path / "run" / "checkpoints"
    (ckpt / "state.pt.tmp").write_bytes(b"")  # 0 bytes: killed at the start of a save
    lines = []
    assert train(cfg, stop_after_epochs=1, log=lines.append) is None
    assert any("set aside state.pt.tmp.unreadable" in x for x in lines) and not (ckpt / "state.pt.tmp").exists()
    assert [json.loads(x)["epoch"] for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()] == [0, 1]

    from pipelines.loader import dali_available

    if dali_available():  # DALI and the fallback draw different augmentations
        with pytest.raises(ValueError, match="train backend: torch -> dali"):
            train(_run_cfg(m, data / "colour", tmp_path, epochs=3, backend="dali"), log=lambda *_: None)

    cfg = _run_cfg(m, data / "colour", tmp_path, epochs=3)  # rewrites colour.json; then the test partition trains too
    spec = m.to_dict()
    spec["folds"] = {"main": {"train": ["train", "test"], "test": []}}
    (tmp_path / "colour.json").write_text(json.dumps(spec))
    with pytest.raises(ValueError, match=r"other data or settings \(.*train samples: 12 -> 16"):
        train(cfg, log=lambda *_: None)

    cfg = _run_cfg(m, data / "colour", tmp_path, epochs=3)
    (ckpt / "state.pt").write_bytes(b"\x80\x04K\x01.")  # a bare pickle, not a torch file
    with pytest.raises(ValueError, match="state.pt: unreadable as an s4d training state"):
        train(cfg, log=lambda *_: None)
    torch.save({"epoch": 1}, ckpt / "state.pt")  # a torch file, but not a state
    with pytest.raises(ValueError, match="state.pt: not an s4d training state"):
        train(cfg, log=lambda *_: None)


def test_a_second_process_on_the_same_run_folder_is_refused(colour_task, tmp_path):
    import shutil

    from preprocess.lock import folder_lock
    from s4d.train.finetune import train

    m, out = colour_task
    data = tmp_path / "data"
    shutil.copytree(out, data / "colour")
    cfg = _run_cfg(m, data / "colour", tmp_path, epochs=1)
    import multiprocessing as mp

    ready, done = mp.get_context("fork").Event(), mp.get_context("fork").Event()

    def hold():
        with folder_lock(tmp_path / "run", "this run folder"):
            ready.set()
            done.wait(30)

    holder = mp.get_context("fork").Process(target=hold)
    holder.start()
    try:
        assert ready.wait(30)
        with pytest.raises(ValueError, match=rf"run: this run folder is in use by pid {holder.pid}"):
            train(cfg, log=lambda *_: None)
    finally:
        done.set()
        holder.join(30)
    assert train(cfg, log=lambda *_: None)["count"] == 4  # free again once the holder is gone


def test_a_fold_without_training_samples_is_refused(colour_task, tmp_path):
    import json
    import shutil

    from s4d.train.finetune import train

    m, out = colour_task
    data = tmp_path / "data"
    shutil.copytree(out, data / "colour")
    spec = m.to_dict()
    spec["folds"] = {"main": {"train": [], "test": ["test"]}}
    cfg = _run_cfg(m, data / "colour", tmp_path)
    (tmp_path / "colour.json").write_text(json.dumps(spec))
    with pytest.raises(ValueError, match="fold main has no training samples"):
        train(cfg, log=lambda *_: None)
