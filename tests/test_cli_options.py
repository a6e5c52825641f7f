"""The training commands' options come from the typed configs (one source of truth), every old
flag still parses, the expert options reach the model, and ``--config FILE`` works."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
import typer
from typer.testing import CliRunner

from preprocess.errors import InputError
from s4d.cli import app
from s4d.cli.from_config import option_specs
from s4d.train.config import PretrainConfig, TrainConfig

COMMANDS = {"train": (TrainConfig, set()), "cv": (TrainConfig, {"fold"}), "pretrain": (PretrainConfig, set())}
CLI_ONLY = {"config", "dry_run"}  # options that are not config fields: the file of options; pretrain's cost estimate


def _command(name):
    return typer.main.get_command(app).commands[name]


def _parse(name, *args):
    """The values ``s4d NAME ARGS`` parses to, without running the command."""
    return _command(name).make_context(name, list(map(str, args))).params


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_option_is_a_config_field_and_every_field_an_option(name):
    cls, left_out = COMMANDS[name]
    specs = {s.name: s for s in option_specs(cls)}
    params = {p.name: p for p in _command(name).params}
    assert set(params) - set(specs) == CLI_ONLY - ({"dry_run"} if name != "pretrain" else set())
    covered = {specs[n].field for n in params if n in specs}
    assert {f.name for f in dataclasses.fields(cls)} - covered == left_out  # a new field without a flag fails here
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    for n, spec in specs.items():
        if n in params and spec.nested is None and "cli_default" not in spec.meta and spec.default is not dataclasses.MISSING:
            assert params[n].default == defaults[spec.field], n  # the command line's default is the field's
    assert params["lr"].default == cls.__dataclass_fields__["optim"].default_factory().base_lr


def test_old_flags_and_short_aliases_still_parse():
    p = _parse(
        "train",
        *("-m", "m.json", "-o", "runs/x", "--fold", "f1", "--variant", "vit-moe", "--size", "debug", "--epochs", 3),
        *("--video-batch", 2, "--image-batch", 4, "--no-sfer", "--init", "a.safetensors", "--data-root", "d", "--seed", 5),
        *("--lr", 1e-3, "--backend", "torch", "--amp", "off", "--compile", "--accum", 2, "--alpha", 0.3, "--select", "val"),
        *("--val-fraction", 0.2, "--select-metric", "war", "--threads", 2, "--no-tensorboard", "--wandb", "proj"),
    )
    assert (p["manifest"], p["epochs"], p["sfer"], p["compile_"], p["threads"], p["tensorboard"], p["lr"]) == (
        "m.json",
        3,
        False,
        True,
        2,
        False,
        1e-3,
    )
    p = _parse("pretrain", "-m", "mix", "--video-batch", 2, "--lr", 0.1, "--threads", 1, "--modality", "frames", "--image-share", 0.25, "--dry-run")
    assert (p["manifest"], p["video_batch"], p["modality"], p["image_share"], p["dry_run"]) == ("mix", 2, "frames", 0.25, True)
    assert "fold" not in _parse("cv", "-m", "m.json")


def test_train_config_maps_flags_to_fields_and_defaults_out():
    from s4d.cli.options import train_config

    cfg = train_config(manifest="m.json", threads=3, compile_=True, lr=1e-3, proportion=0.25, experts=4, top_k=1)
    assert (cfg.loader_threads, cfg.compile, cfg.optim.base_lr, cfg.proportion, cfg.experts, cfg.top_k) == (3, True, 1e-3, 0.25, 4, 1)
    assert cfg.out == "runs/m" and cfg.optim.weight_decay == TrainConfig(manifest="m", out="o").optim.weight_decay
    assert json.loads(json.dumps(cfg.to_dict()))["moae_position"] == "later"  # recorded in config.json


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"top_k": 9}, r"^--top-k 9: must be in 1..--experts \(8\)$"),
        ({"experts": 4, "top_k": 5}, r"^--top-k 5: must be in 1..--experts \(4\)$"),
        ({"variant": "vit", "experts": 4}, r"^--experts 4: variant vit has no experts"),
        ({"variant": "vit-mtl", "moae_position": "early"}, r"^--moae-position early: variant vit-mtl has no experts"),
        ({"size": "debug", "moae_layers": 5}, r"^--moae-layers 5: must be in 1..4 \(the depth of size debug\)$"),
        ({"moae_position": "last"}, r"^--moae-position last: must be one of early \| middle \| later \| alternate$"),
        ({"size": "debug", "moae_position": "alternate", "moae_layers": 3}, r"^--moae-position alternate: 3 expert blocks need a depth >= 5"),
        ({"proportion": -0.5}, r"^--sfer-share -0.5: must be >= 0"),
    ],
)
def test_expert_and_share_options_are_validated_in_one_line(changes, message):
    with pytest.raises(InputError, match=message):
        TrainConfig(manifest="m", out="o", **changes)


@pytest.mark.parametrize(
    ("changes", "message"),
    [({"modality": "audio"}, r"^--modality audio: must be one of both"), ({"image_share": 1.5}, r"^--image-share 1.5: must be in 0..1$")],
)
def test_pretrain_options_are_validated(changes, message):
    assert (PretrainConfig(mixture="m", out="o").modality, PretrainConfig(mixture="m", out="o").image_share) == ("both", None)
    with pytest.raises(InputError, match=message):
        PretrainConfig(mixture="m", out="o", **changes)


@pytest.mark.parametrize(
    ("text", "suffix", "message"),
    [
        ("epochs: 2\nlearning_rate: 0.1\n", ".yaml", "unknown key 'learning_rate'"),
        ('{"top-k": "two"}', ".json", "top-k: expected int, got str 'two'"),
        ("sfer: 1\n", ".yml", "sfer: expected bool, got int 1"),
        ("threads: 0\n", ".yaml", "threads: must be >= 1, got 0"),
        ("experts: [1, 2\n", ".yaml", "not valid YAML"),
        ("[1, 2]", ".json", "must hold a mapping"),
        ("top_k: 1\ntop-k: 2\n", ".yaml", "keys 'top_k' and 'top-k' set the same option"),
    ],
)
def test_a_bad_config_file_is_one_line_naming_file_and_key(tmp_path, text, suffix, message):
    path = tmp_path / f"opts{suffix}"
    path.write_text(text)
    res = CliRunner().invoke(app, ["cv", "-m", "m.json", "--config", str(path)])
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and str(path) in lines[0] and message in lines[0], res.output


def test_the_manifest_may_come_from_the_config_file_but_is_required(tmp_path):
    path = tmp_path / "opts.json"
    path.write_text('{"epochs": 1}')
    res = CliRunner().invoke(app, ["train", "--config", str(path)])
    assert res.exit_code == 2 and "--manifest is required" in res.output, res.output


def test_training_with_expert_options_from_file_and_flags_builds_that_model(tmp_path):
    """A real debug-size run: --config sets the experts, the command line overrides --top-k; the
    run's config.json and the checkpoint's model config both carry them."""
    from s4d.checkpoint import load_model

    from .test_train import make_colour_task

    m, shards = make_colour_task(tmp_path / "task")
    shutil.copytree(shards, tmp_path / "data" / "colour")
    (tmp_path / "colour.json").write_text(json.dumps(m.to_dict()))
    opts = tmp_path / "run.yaml"
    opts.write_text(
        f"manifest: {tmp_path / 'colour.json'}\ndata-root: {tmp_path / 'data'}\nsize: debug\nepochs: 1\nvideo_batch: 4\nsfer: false\n"
        "backend: torch\naugment: false\nexperts: 4\ntop-k: 2\nmoae_layers: 2\nmoae-position: early\n"
    )
    res = CliRunner().invoke(app, ["train", "--config", str(opts), "--top-k", "1", "-o", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (cfg["experts"], cfg["top_k"], cfg["moae_layers"], cfg["moae_position"], cfg["epochs"]) == (4, 1, 2, "early", 1)
    model = load_model(tmp_path / "run" / "checkpoints" / "last.safetensors")
    moae = model.config.moae
    assert (moae.blocks, moae.num_experts, moae.top_k) == ((0, 1), 4, 1)
    sidecar = json.loads((tmp_path / "run" / "checkpoints" / "last.json").read_text())
    assert "num_experts" in json.dumps(sidecar) and '"top_k": 1' in json.dumps(sidecar)


def test_a_run_started_before_new_settings_resumes_when_they_are_left_at_their_defaults(tmp_path):
    """config.json of an older run lacks the settings added since (experts, top_k, ...): a re-run
    that leaves them at their defaults resumes; one that changes them is refused naming them."""
    import json

    import pytest

    from preprocess.errors import InputError
    from s4d.runtime.rundir import write_config
    from s4d.train.config import TrainConfig

    cfg = TrainConfig(manifest="dfew", out=str(tmp_path))
    write_config(tmp_path, cfg)
    old = json.loads((tmp_path / "config.json").read_text())
    for key in ("experts", "top_k", "moae_layers", "moae_position"):
        old.pop(key)
    (tmp_path / "config.json").write_text(json.dumps(old))
    write_config(tmp_path, cfg)  # resumes
    (tmp_path / "config.json").write_text(json.dumps(old))
    with pytest.raises(InputError, match=r"different settings \(experts\)"):
        write_config(tmp_path, TrainConfig(manifest="dfew", out=str(tmp_path), experts=4))
