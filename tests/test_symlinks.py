"""Symlinks planted in a run or shard folder (named like our outputs) are never written through,
and the traceback log lives in a private per-user folder."""

import json
import os
import stat
import sys
from pathlib import Path

import pytest

from preprocess.lock import folder_lock
from preprocess.safe_io import SymlinkRefused, open_new
from preprocess.shards.writer import ShardWriter, write_json_atomic

from .test_bad_inputs import one_error_line, s4d

SECRET = "the user's private key\n"


@pytest.fixture
def plant(tmp_path):
    """``plant(folder, name)``: a symlink ``folder/name`` to a file outside holding SECRET."""
    outside = tmp_path / "outside"
    outside.mkdir()

    def make(folder: Path, name: str) -> Path:
        target = outside / name.replace("/", "_")
        target.write_text(SECRET)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).symlink_to(target)
        return target

    return make


def refused(err, link: Path) -> bool:
    return str(err.value) == f"{link} is a symbolic link; refusing to write through it"


def test_open_new_refuses_a_symlink_and_writes_a_file(tmp_path, plant):
    target = plant(tmp_path / "f", "x.txt")
    for mode in ("w", "a", "wb", "a+", "x"):
        with pytest.raises(SymlinkRefused) as err:
            open_new(tmp_path / "f" / "x.txt", mode)
        assert refused(err, tmp_path / "f" / "x.txt") and isinstance(err.value, ValueError)
    assert target.read_text() == SECRET
    with open_new(tmp_path / "f" / "y.txt", "w") as fh:
        fh.write("ok")
    assert (tmp_path / "f" / "y.txt").read_text() == "ok"


def test_the_folder_lock_is_not_taken_through_a_symlink(tmp_path, plant):
    target = plant(tmp_path / "run", ".s4d.lock")
    with pytest.raises(SymlinkRefused) as err:
        with folder_lock(tmp_path / "run", "this run folder"):
            pass
    assert refused(err, tmp_path / "run" / ".s4d.lock") and target.read_text() == SECRET


def test_shards_cli_refuses_a_planted_lock_in_one_line(tmp_path, plant):
    from .test_preprocess import make_raw

    raw = make_raw(tmp_path / "raw", n=2)
    target = plant(tmp_path / "out", ".s4d.lock")
    rc, _, err = s4d("shards", "--csv", raw / "list.csv", "--no-align", "--size", "32", "--frames", "4", "--stride", "1", "--out", tmp_path / "out")
    assert rc == 2 and ".s4d.lock is a symbolic link; refusing to write through it" in one_error_line(err)
    assert target.read_text() == SECRET


def test_run_folder_writers_refuse_symlinks(tmp_path, plant):
    from s4d.runtime.rundir import append_metrics, trim_metrics, write_config

    run = tmp_path / "run"
    metrics = plant(run, "metrics.jsonl")
    with pytest.raises(SymlinkRefused) as err:
        append_metrics(run, {"epoch": 0})
    assert refused(err, run / "metrics.jsonl")
    with pytest.raises(SymlinkRefused):
        trim_metrics(run / "metrics.jsonl", 0)
    config = plant(run, "config.json")

    class Cfg:
        def to_dict(self):
            return {"seed": 1}

    with pytest.raises(SymlinkRefused) as err:
        write_config(run, Cfg())
    assert refused(err, run / "config.json")
    assert metrics.read_text() == SECRET and config.read_text() == SECRET


def test_atomic_writers_refuse_a_planted_tmp_and_replace_a_planted_output(tmp_path, plant):
    out = tmp_path / "shards"
    plan_tmp = plant(out, "plan.json.tmp")
    with pytest.raises(SymlinkRefused) as err:
        write_json_atomic(out / "plan.json", {"a": 1})
    assert refused(err, out / "plan.json.tmp") and plan_tmp.read_text() == SECRET
    summary = plant(out, "summary.json")  # the rename replaces the link itself, never its target
    write_json_atomic(out / "summary.json", {"uar": 0.5})
    assert summary.read_text() == SECRET and not (out / "summary.json").is_symlink()
    assert json.loads((out / "summary.json").read_text()) == {"uar": 0.5}
    tar_tmp = plant(out, "train-00000.tar.tmp")
    with pytest.raises(SymlinkRefused):
        with ShardWriter(out / "train-00000.tar") as w:
            w.write("k", {"txt": b"x"})
    assert tar_tmp.read_text() == SECRET and not (out / "train-00000.tar").exists()
    idx_tmp = plant(out, "test-00000.idx.tmp")
    with pytest.raises(SymlinkRefused):
        with ShardWriter(out / "test-00000.tar") as w:
            w.write("k", {"txt": b"x"})
    assert idx_tmp.read_text() == SECRET


def _fake_run(run: Path) -> None:
    """The files export-hub reads, for a pre-training run (no scores needed)."""
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"mixture": "tiny", "epochs": 1}))
    import torch
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(run / "checkpoints" / "last.safetensors"))
    (run / "checkpoints" / "last.json").write_text(json.dumps({"epoch": 1, "config": {}}))


def test_export_hub_never_copies_a_symlinked_figure(tmp_path, plant, capsys):
    from s4d.checkpoint.hub_export import export_hub

    run = tmp_path / "run"
    _fake_run(run)
    plant(run, "confusion.png")
    (run / "recall.png").write_bytes(b"\x89PNG")
    export_hub(run, tmp_path / "up")
    names = sorted(p.name for p in (tmp_path / "up").iterdir())
    assert "confusion.png" not in names and "recall.png" in names and "model.safetensors" in names
    assert not any(SECRET in p.read_text(errors="replace") for p in (tmp_path / "up").iterdir())
    lines = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert lines == [f"export-hub: skipped {run / 'confusion.png'}: a symbolic link, not a file the run wrote"]


def test_export_hub_refuses_a_symlinked_checkpoints_folder(tmp_path, plant):
    from s4d.checkpoint.hub_export import export_hub

    run = tmp_path / "run"
    _fake_run(tmp_path / "elsewhere")
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"mixture": "tiny", "epochs": 1}))
    (run / "checkpoints").symlink_to(tmp_path / "elsewhere" / "checkpoints")
    with pytest.raises(SymlinkRefused) as err:
        export_hub(run, tmp_path / "up")
    assert refused(err, run / "checkpoints")


def _write_log(monkeypatch, home: Path, state: Path | None) -> Path:
    import s4d.cli.main as cli

    monkeypatch.delenv("S4D_LOG_DIR", raising=False)
    monkeypatch.setenv("HOME", str(home))
    if state is None:
        monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    else:
        monkeypatch.setenv("XDG_STATE_HOME", str(state))
    try:
        raise KeyError("boom")
    except KeyError:
        path = Path(cli._write_traceback())
    assert path.is_file() and "KeyError: 'boom'" in path.read_text()
    assert stat.S_IMODE(os.lstat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.lstat(path.parent).st_mode) & 0o077 == 0
    return path


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX modes")
def test_the_traceback_log_goes_to_a_private_per_user_folder(tmp_path, monkeypatch):
    path = _write_log(monkeypatch, tmp_path / "home", None)
    assert path.parent == tmp_path / "home" / ".local" / "state" / "s4d" / "logs"
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    path = _write_log(monkeypatch, tmp_path / "home", tmp_path / "state")
    assert path.parent == tmp_path / "state" / "s4d" / "logs"


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX modes")
def test_a_planted_or_shared_log_folder_is_refused(tmp_path, monkeypatch, plant):
    planted = tmp_path / "elsewhere"
    planted.mkdir()
    (tmp_path / "state" / "s4d").mkdir(parents=True)
    (tmp_path / "state" / "s4d" / "logs").symlink_to(planted)  # another user's folder
    path = _write_log(monkeypatch, tmp_path / "home", tmp_path / "state")
    assert path.parent != tmp_path / "state" / "s4d" / "logs" and not list(planted.iterdir())

    shared = tmp_path / "shared" / "s4d" / "logs"
    shared.mkdir(parents=True)
    shared.chmod(0o777)  # group/world-writable: someone could plant a link there
    path = _write_log(monkeypatch, tmp_path / "home", tmp_path / "shared")
    assert path.parent != shared and not list(shared.iterdir())

    import time

    own = tmp_path / "own" / "s4d" / "logs"
    monkeypatch.setattr(time, "strftime", lambda *a: "20260101-000000")
    target = plant(own, f"s4d-20260101-000000-{os.getpid()}.log")  # a link with the very name we would use
    own.chmod(0o700)
    path = _write_log(monkeypatch, tmp_path / "home", tmp_path / "own")
    assert path.parent != own and target.read_text() == SECRET
