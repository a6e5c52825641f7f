"""One owner per output folder (``preprocess.ownership``): ``eval``, ``analyze`` and
``export-hub`` never write into a training run's folder or another command's, refuse their own
earlier outputs unless ``--force``, and ``--force`` removes only files the command writes."""

import json
from pathlib import Path

import pytest

from preprocess.errors import InputError
from preprocess.ownership import MARKER, check, claim, guard, kind_of
from tests.test_bad_inputs import GOOD, one_error_line


def s4d(*args: object) -> tuple[int, str, str]:
    """The real CLI, in this process (no interpreter start per case): (exit code, stdout, stderr)."""
    from typer.testing import CliRunner

    from s4d.cli import app

    res = CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "300"})
    return res.exit_code, res.stdout, res.stderr


def fake_run(run: Path, extra: str = "metrics.jsonl") -> dict[str, bytes]:
    """A training run as it looks on disk (before markers): config.json and one more of its files.
    Returns every file's bytes, to check that nothing touched them."""
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.json").write_text(json.dumps({"manifest": "tiny", "epochs": 1}))
    if extra.endswith("/"):
        (run / extra).mkdir()
    else:
        (run / extra).write_text("{}\n")
    for name in ("summary.json", "confusion.png", "predictions.parquet"):
        (run / name).write_bytes(b"the run's own " + name.encode())
    return snapshot(run)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("extra", ["metrics.jsonl", "checkpoints/", ".s4d.lock", "tensorboard/", "fold_a/"])
def test_a_training_run_is_recognised_by_its_files(tmp_path, extra):
    fake_run(tmp_path / "run", extra)
    assert kind_of(tmp_path / "run") == "train"
    (tmp_path / "cfg_only").mkdir()
    (tmp_path / "cfg_only" / "config.json").write_text("{}")
    assert kind_of(tmp_path / "cfg_only") is None and kind_of(tmp_path / "missing") is None
    (tmp_path / "shards").mkdir()
    (tmp_path / "shards" / "shards.json").write_text("{}")
    assert kind_of(tmp_path / "shards") == "shards"


def test_claim_marks_refuses_and_force_replaces_only_our_files(tmp_path):
    out = tmp_path / "deep" / "ev"
    claim(out, "eval", force=False)
    assert json.loads((out / MARKER).read_text()) == {"format_version": 1, "kind": "eval"} and kind_of(out) == "eval"
    (out / "summary.json").write_text("old")
    (out / "notes.txt").write_text("mine")  # the user's own file in an eval folder: kept
    with pytest.raises(InputError, match=r"already holds s4d eval outputs \(summary.json\); add --force"):
        check(out, "eval", force=False)
    claim(out, "eval", force=True)
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "notes.txt"]
    with pytest.raises(InputError, match="holds the outputs of s4d eval; s4d analyze writes only into its own folder"):
        claim(out, "analyze", force=True)  # --force never takes another kind's folder


def test_a_bad_or_symlinked_marker_is_one_clear_error(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / MARKER).write_text("{not json")
    with pytest.raises(InputError, match=r"\.s4d-owner\.json: unreadable owner marker"):
        kind_of(tmp_path / "a")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / MARKER).symlink_to(tmp_path / "a" / MARKER)
    with pytest.raises(InputError, match="symbolic link"):
        claim(tmp_path / "b", "eval", force=True)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / MARKER).write_text(json.dumps({"kind": "rm -rf", "format_version": 1}))
    with pytest.raises(InputError, match="unknown owner kind"):
        claim(tmp_path / "c", "eval", force=True)


def test_predict_guard_keeps_users_files_but_refuses_a_run(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "video.mp4").write_bytes(b"x")
    assert guard(tmp_path / "mine", "predict") is None  # a table among the user's files: fine, nothing written
    assert not (tmp_path / "mine" / MARKER).exists()
    before = fake_run(tmp_path / "run")
    with pytest.raises(InputError, match="holds a training run"):
        guard(tmp_path / "run", "predict")
    assert snapshot(tmp_path / "run") == before


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A manifest (first fold ``f1``) and a classifier checkpoint: enough for a command to reach
    its --out check (no shards: the refusal comes before any work)."""
    from s4d import build_model, save_checkpoint
    from s4d.models.config import model_config

    tmp = tmp_path_factory.mktemp("inputs")
    spec = {**GOOD, "folds": {"f1": {"train": ["train"], "test": ["test"]}}}
    (tmp / "tiny.json").write_text(json.dumps(spec))
    ckpt = save_checkpoint(build_model(model_config("s4d", "debug", video_classes=2, image_classes=2)), tmp / "m.safetensors")
    return tmp / "tiny.json", ckpt


def _with_marker(folder: Path, kind: str, *names: str) -> Path:
    folder.mkdir(parents=True)
    (folder / MARKER).write_text(json.dumps({"kind": kind, "format_version": 1}))
    for n in names:
        (folder / n).write_bytes(b"earlier")
    return folder


OUT_CASES = [  # (command, how --out is set up, --force?, what the one line must say)
    ("eval", "run", False, "holds a training run (s4d train, cv or pretrain); s4d eval writes only into its own folder"),
    ("eval", "run", True, "holds a training run (s4d train, cv or pretrain); s4d eval writes only into its own folder"),
    ("eval", "analyze", True, "holds the outputs of s4d analyze; s4d eval writes only into its own folder"),
    ("eval", "earlier", False, "already holds s4d eval outputs (summary.json); add --force to replace them"),
    ("eval", "foreign", True, "not empty and not an s4d eval folder (holds notes.txt)"),
    ("analyze-order", "run", True, "holds a training run (s4d train, cv or pretrain); s4d analyze writes only into its own folder"),
    ("analyze-experts", "eval", False, "holds the outputs of s4d eval; s4d analyze writes only into its own folder"),
    ("analyze-scores", "run", True, "holds a training run (s4d train, cv or pretrain); s4d analyze writes only into its own folder"),
    ("export-hub", "run", True, "holds a training run (s4d train, cv or pretrain); s4d export-hub writes only into its own folder"),
    ("export-hub", "foreign", True, "not empty and files s4d export-hub did not write (holds notes.txt)"),
]


@pytest.mark.parametrize("command,setup,force,message", OUT_CASES)
def test_a_folder_that_is_not_the_commands_own_is_refused_in_one_line(inputs, tmp_path, command, setup, force, message):
    manifest, ckpt = inputs
    out = tmp_path / "out"
    if setup == "run":
        fake_run(out)
    elif setup == "foreign":
        out.mkdir()
        (out / "notes.txt").write_text("mine")
    elif setup == "earlier":
        _with_marker(out, "eval", "summary.json")
    else:
        _with_marker(out, setup)
    before = snapshot(out)
    source = tmp_path / "src"
    fake_run(source)
    (source / "summary.json").write_text(json.dumps({"confusion": [[1, 0], [0, 1]], "recall": {"a": 1.0, "b": 1.0}, "uar": 1.0}))
    args = {
        "eval": ("eval", "-m", manifest, "-c", ckpt),
        "analyze-order": ("analyze", "order", "-m", manifest, "-c", ckpt),
        "analyze-experts": ("analyze", "experts", "-m", manifest, "-c", ckpt),
        "analyze-scores": ("analyze", "scores", source),
        "export-hub": ("export-hub", source),
    }[command]
    rc, _, err = s4d(*args, "--out", out, *(["--force"] if force else []))
    line = one_error_line(err)
    assert rc == 2 and str(out) in line and message in line, line
    assert snapshot(out) == before  # not a byte changed


def test_eval_help_states_the_default_the_code_uses(inputs, tmp_path, monkeypatch):
    manifest, ckpt = inputs
    rc, text, _ = s4d("eval", "--help")
    assert rc == 0 and "runs/eval-<manifest>-<fold>" in " ".join(text.split())
    before = fake_run(tmp_path / "runs" / "eval-tiny-f1")  # the default for tiny.json, whose first fold is f1
    monkeypatch.chdir(tmp_path)
    rc, _, err = s4d("eval", "-m", manifest, "-c", ckpt)
    line = one_error_line(err)
    assert rc == 2 and "runs/eval-tiny-f1: holds a training run" in line
    assert snapshot(tmp_path / "runs" / "eval-tiny-f1") == before


def _pretrain_run(run: Path, figure: bool) -> Path:
    """The files export-hub reads, for a pre-training run (as tests/test_symlinks.py)."""
    import torch
    from safetensors.torch import save_file

    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"mixture": "tiny", "epochs": 1}))
    save_file({"w": torch.zeros(2)}, str(run / "checkpoints" / "last.safetensors"))
    (run / "checkpoints" / "last.json").write_text(json.dumps({"epoch": 1, "config": {}}))
    if figure:
        (run / "confusion.png").write_bytes(b"\x89PNG from " + run.name.encode())
    return run


def test_export_hub_force_leaves_only_this_exports_files(tmp_path):
    from s4d.checkpoint.hub_export import export_hub

    up = tmp_path / "up"
    export_hub(_pretrain_run(tmp_path / "a", figure=True), up)
    assert sorted(p.name for p in up.iterdir()) == [
        "README.md",
        "confusion.png",
        "model.json",
        "model.safetensors",
        "training_config.json",
    ]  # no marker: the folder is uploaded as it is
    assert kind_of(up) == "export-hub"
    with pytest.raises(InputError, match=r"already holds s4d export-hub outputs .*add --force"):
        export_hub(_pretrain_run(tmp_path / "b", figure=False), up)
    export_hub(tmp_path / "b", up, force=True)
    assert sorted(p.name for p in up.iterdir()) == ["README.md", "model.json", "model.safetensors", "training_config.json"]
    assert "# S4D: b" in (up / "README.md").read_text()  # run a's figure did not stay beside b's card


def test_analyze_scores_writes_beside_never_into_the_run(tmp_path):
    from s4d.analysis.scores import analyze_scores

    run = tmp_path / "run"
    fake_run(run)
    (run / "summary.json").write_text(json.dumps({"confusion": [[2, 1], [0, 3]], "recall": {"a": 2 / 3, "b": 1.0}, "uar": 0.83}))
    before = snapshot(run)
    result = analyze_scores(run)
    analysis = run / "analysis"
    assert result["out"] == str(analysis) and kind_of(analysis) == "analyze" and kind_of(run) == "train"
    assert sorted(p.name for p in analysis.iterdir()) == [MARKER, "confusion.png", "recall.png"]
    assert {k: v for k, v in snapshot(run).items() if not k.startswith("analysis")} == before
    with pytest.raises(InputError, match="add --force"):
        analyze_scores(run)
    (analysis / "recall.png").write_bytes(b"stale")
    analyze_scores(run, force=True)
    assert (analysis / "recall.png").read_bytes().startswith(b"\x89PNG")


def test_analyses_share_one_folder_and_eval_force_replaces_its_outputs(tmp_path):
    """experts then relevance into the same default folder: each owns only its files."""
    from s4d.analysis.outputs import claim_out, write_result

    out = tmp_path / "an"
    write_result(out, "order", {"uar": float("nan")}, force=False)
    claim_out(out, "experts", force=False)  # another analysis' files are not "earlier outputs"
    assert json.loads((out / "frame_order.json").read_text()) == {"uar": None}  # strict JSON
    with pytest.raises(InputError, match=r"already holds s4d analyze outputs \(frame_order.json\)"):
        write_result(out, "order", {"uar": 0.5}, force=False)


def test_a_training_run_marks_its_folder_and_refuses_an_eval_folder(tmp_path):
    from preprocess.ownership import mark_run

    fake_run(tmp_path / "old")  # made before markers: gets one on resume
    mark_run(tmp_path / "old", "train")
    assert json.loads((tmp_path / "old" / MARKER).read_text())["kind"] == "train"
    claim(tmp_path / "ev", "eval", force=False)
    with pytest.raises(InputError, match="holds the outputs of s4d eval; s4d train needs a run folder of its own"):
        mark_run(tmp_path / "ev", "train")
    with pytest.raises(InputError, match="holds a training run"):
        mark_run(tmp_path / "old", "pretrain")


def test_predict_refuses_to_write_into_a_training_run(tmp_path):
    """``predict --out RUN/x.json`` would put a file among a run's own: refused in one line
    before any model or input is read (the checkpoint named does not even exist)."""
    from .test_bad_inputs import one_error_line, s4d

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text("{}")
    (run / "metrics.jsonl").write_text("")
    before = sorted(p.name for p in run.iterdir())
    rc, _, err = s4d("predict", tmp_path / "missing.mp4", "-c", tmp_path / "missing.safetensors", "--out", run / "x.json")
    line = one_error_line(err)
    assert rc == 2 and str(run) in line and "holds a training run" in line, line
    assert sorted(p.name for p in run.iterdir()) == before
