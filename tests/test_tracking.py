"""Experiment tracking read back from disk: TensorBoard event files (tensorboard's own reader)
and a W&B offline run folder (its record log), after an interrupted and resumed training run."""

import json
import re
import shutil
import struct

import pytest

from .test_train import _run_cfg, colour_task  # noqa: F401  (the module-scoped fixture)


def tensorboard_scalars(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    scalars = {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
    images = {tag: acc.Images(tag) for tag in acc.Tags()["images"]}
    return scalars, images


def wandb_history(run_file):
    """The ``history`` rows of a W&B ``.wandb`` file: a LevelDB-style log (7-byte header, 32 KiB
    blocks of records: crc32 u32, length u16, type u8; 1 full, 2 first, 3 middle, 4 last) of
    protobuf ``Record`` messages."""
    from wandb.proto import wandb_internal_pb2 as pb

    raw = run_file.read_bytes()
    assert raw[:4] == b":W&B", run_file
    pos, block, part, rows = 7, 32768, b"", []
    while pos + 7 <= len(raw):
        if block - pos % block < 7:  # block trailer padding
            pos += block - pos % block
            continue
        _, n, kind = struct.unpack("<IHB", raw[pos : pos + 7])
        part, pos = part + raw[pos + 7 : pos + 7 + n], pos + 7 + n
        if kind == 0 and n == 0:
            break
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(part)
            part = b""
            if record.WhichOneof("record_type") == "history":
                rows.append({(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in record.history.item})
    return rows


def test_a_resumed_run_logs_each_step_once_to_tensorboard_and_wandb_offline(colour_task, tmp_path, monkeypatch):  # noqa: F811
    from torch.utils.tensorboard import SummaryWriter

    from s4d.train.finetune import train

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    m, out = colour_task
    data = tmp_path / "data"
    shutil.copytree(out, data / "colour")
    cfg = _run_cfg(m, data / "colour", tmp_path, out=str(tmp_path / "run"), epochs=2, wandb="s4d-test")
    run = tmp_path / "run"
    assert train(cfg, stop_after_epochs=1, log=lambda *_: None) is None
    with SummaryWriter(str(run / "tensorboard")) as w:  # what a kill during epoch 2 leaves: steps past the checkpoint
        for step in (4, 5):
            w.add_scalar("train/loss", 999.0, step)
    summary = train(cfg, log=lambda *_: None)

    scalars, images = tensorboard_scalars(run / "tensorboard")
    metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    losses = scalars["train/loss"]
    assert [s for s, _ in losses] == [1, 2, 3, 4, 5, 6]  # 12 clips / batch 4, twice; the orphans purged
    assert all(v < 100 for _, v in losses)
    for epoch, steps in ((0, losses[:3]), (1, losses[3:])):  # one batch per step: the epoch's loss is their mean
        assert sum(v for _, v in steps) / 3 == pytest.approx(metrics[epoch]["loss"], rel=1e-5)
    assert scalars["epoch/loss"] == [(3, pytest.approx(metrics[0]["loss"])), (6, pytest.approx(metrics[1]["loss"]))]
    assert len(scalars["train/lr"]) == 6 and all(v > 0 for _, v in scalars["train/lr"])
    assert scalars["test/uar"] == [(6, pytest.approx(summary["uar"]))] and scalars["test/war"][0][1] == pytest.approx(summary["war"])
    assert [e.step for e in images["experts/mean_gate"]] == [3, 6]  # the MoAE routing, once per epoch
    assert len(images["test/confusion"]) == 1 and images["test/confusion"][0].width > 100

    runs = sorted((run / "wandb").glob("offline-run-*"))
    run_id = (run / "wandb_id").read_text().strip()
    # the resume continued the same W&B run (two sessions in the same second: W&B adds "-1" to the folder)
    assert runs and all(re.search(rf"-{run_id}(-\d+)?$", r.name) for r in runs), [r.name for r in runs]
    rows = [row for r in runs for row in wandb_history(r / f"run-{run_id}.wandb")]
    steps = sorted(row["_step"] for row in rows if "train/loss" in row)
    assert steps == [1, 2, 3, 4, 5, 6]
    test = [row for row in rows if "test/uar" in row]
    assert len(test) == 1 and test[0]["test/uar"] == pytest.approx(summary["uar"])
    figures = [
        (row["_step"], tag, row[f"{tag}/path"])
        for row in rows
        for tag in ("experts/mean_gate", "test/confusion")
        if row.get(f"{tag}/_type") == "image-file"
    ]  # an image: its PNG copied into the run's files
    assert [(s, t) for s, t, _ in figures] == [(3, "experts/mean_gate"), (6, "experts/mean_gate"), (6, "test/confusion")]
    assert all(any((r / "files" / path).is_file() for r in runs) for *_, path in figures)


def test_tensorboard_can_be_switched_off_and_a_bad_wandb_project_is_named(colour_task, tmp_path):  # noqa: F811
    from s4d.train.finetune import train

    m, out = colour_task
    data = tmp_path / "data"
    shutil.copytree(out, data / "colour")
    train(_run_cfg(m, data / "colour", tmp_path, out=str(tmp_path / "quiet"), epochs=1, tensorboard=False), log=lambda *_: None)
    assert (tmp_path / "quiet" / "summary.json").is_file() and not (tmp_path / "quiet" / "tensorboard").exists()
    with pytest.raises(ValueError, match="--wandb must be a W&B project name"):
        _run_cfg(m, data / "colour", tmp_path, wandb="team/project")


def test_a_wandb_that_cannot_start_is_one_error_naming_the_flag(tmp_path, monkeypatch):
    import wandb

    from s4d.runtime.tracking import Tracker

    def refuse(**kw):
        raise wandb.errors.UsageError("api_key not configured (no-tty)")

    monkeypatch.setattr(wandb, "init", refuse)
    with pytest.raises(ValueError, match=r"--wandb s4d: W&B could not start \(api_key not configured.*WANDB_MODE=offline"):
        Tracker(tmp_path, tensorboard=False, wandb_project="s4d").open()
