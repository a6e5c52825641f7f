"""Bad input through the real CLI: exit code 2, one line on stderr that names the input, and
never a traceback. Every case builds its own tiny input."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .media_factory import moving_square, write_video

ROOT = Path(__file__).resolve().parents[1]
GOOD = {
    "name": "tiny",
    "modality": "video",
    "classes": ["a", "b"],
    "layout": {"adapter": "csv", "options": {"csv": "list.csv"}},
    "preprocess": {"align": False, "size": 32},
    "partitions": ["train", "test"],
    "folds": {"main": {"train": ["train"], "test": ["test"]}},
    "clip": {"frames": 4, "stride": 1},
}


def s4d(*args, cwd=None, env=None):
    res = subprocess.run(
        [sys.executable, "-m", "s4d", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "300", **(env or {})},
    )
    return res.returncode, res.stdout, res.stderr


def one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1, stderr
    return errors[0]


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    raw = tmp_path_factory.mktemp("raw")
    rows = ["path,label,split"]
    for i in range(4):
        write_video(raw / f"v{i}.webm", moving_square(6, 32, 32, seed=i))
        rows.append(f"v{i}.webm,{'ab'[i % 2]},{'train' if i < 3 else 'test'}")
    (raw / "list.csv").write_text("\n".join(rows) + "\n")
    return raw


def _manifest(tmp_path, **changes):
    spec = json.loads(json.dumps(GOOD))
    for dotted, value in changes.items():
        *path, key = dotted.split("__")
        node = spec
        for p in path:
            node = node[p]
        node[key] = value
    f = tmp_path / "bad.json"
    f.write_text(json.dumps(spec))
    return f


MANIFEST_CASES = [  # (field changes, what the line must name)
    ({"preprocess__size": "160"}, "preprocess.size: expected an integer, got a string"),
    ({"folds": ["main"]}, "folds: expected an object, got a list"),
    ({"clip": "16"}, "clip: expected an object or null, got a string"),
    ({"name": 7}, "name: expected a string, got an integer"),
    ({"name": "../outside"}, "name: must be a plain folder name"),
    ({"partitions": ["train", "test", "/abs/x"]}, "partitions: must be a plain folder name"),
    ({"folds": {"../evil": {"train": ["train"], "test": ["test"]}}}, "folds: must be a plain folder name"),
    ({"classes": "ab"}, "classes: expected a list of strings"),
    ({"preprocess__align": "yes"}, "preprocess.align: expected true or false"),
    ({"folds__main__train": "train"}, "folds.main.train: expected a list of strings"),
]


@pytest.mark.parametrize("changes,named", MANIFEST_CASES, ids=[n.split(":")[0] for _, n in MANIFEST_CASES])
def test_a_malformed_manifest_is_one_line_naming_the_field(raw, tmp_path, changes, named):
    rc, _, err = s4d("shards", "--manifest", _manifest(tmp_path, **changes), "--raw", raw, "--out", tmp_path / "out")
    line = one_error_line(err)
    assert rc == 2 and "bad.json" in line and named in line, line
    assert not (tmp_path / "out").exists() and not (raw.parent / "outside").exists()  # nothing written


def test_a_latin1_csv_names_the_file_and_line(raw, tmp_path):
    text = (raw / "list.csv").read_text().splitlines()
    text[2] = text[2].replace("v1.webm", "caf\u00e9.webm")
    csv = tmp_path / "list.csv"
    csv.write_bytes(("\n".join(text) + "\n").encode("latin-1"))
    rc, _, err = s4d("shards", "--csv", csv, "--no-align", "--out", tmp_path / "out")
    line = one_error_line(err)
    assert rc == 2 and "list.csv: line 3: not UTF-8" in line


def test_a_csv_with_a_byte_order_mark_reads(raw, tmp_path):
    csv = raw / "bom.csv"
    csv.write_bytes(b"\xef\xbb\xbf" + (raw / "list.csv").read_bytes())
    rc, out, err = s4d("shards", "--csv", csv, "--no-align", "--size", "32", "--frames", "4", "--stride", "1", "--out", tmp_path / "out")
    assert rc == 0, err
    assert "test 1 kept / 0 skipped, train 3 kept / 0 skipped" in out


def test_a_partition_left_empty_fails_after_writing_the_shards(raw, tmp_path):
    csv = raw / "broken.csv"
    (raw / "garbage.webm").write_bytes(b"not a video at all" * 100)
    csv.write_text("path,label,split\nv0.webm,a,train\nv1.webm,b,train\ngarbage.webm,a,test\n")
    rc, out, err = s4d("shards", "--csv", csv, "--no-align", "--size", "32", "--frames", "4", "--stride", "1", "--out", tmp_path / "out")
    line = one_error_line(err)
    assert rc == 2 and "partition test: no sample kept (1 skipped" in line and "garbage.webm" in line
    assert "test 0 kept / 1 skipped" in out and (tmp_path / "out" / "shards.json").is_file()  # written, and said


def test_a_second_shards_run_on_the_same_folder_is_refused(raw, tmp_path):
    from preprocess.lock import folder_lock

    with folder_lock(tmp_path / "out", "this shard folder"):
        rc, _, err = s4d("shards", "--manifest", _manifest(tmp_path), "--raw", raw, "--out", tmp_path / "out")
    line = one_error_line(err)
    assert rc == 2 and "out: this shard folder is in use by pid" in line


def test_training_on_evaluation_only_data_says_so(raw, tmp_path):
    csv = raw / "eval_only.csv"
    csv.write_text("path,label,split\nv0.webm,a,test\nv1.webm,b,test\n")
    rc, out, err = s4d("shards", "--csv", csv, "--no-align", "--size", "32", "--frames", "4", "--stride", "1", "--out", tmp_path / "data")
    assert rc == 0, err  # an evaluation set is valid data
    rc, _, err = s4d("train", "--manifest", tmp_path / "data" / "manifest.json", "--size", "debug", "--out", tmp_path / "run", "--backend", "torch")
    line = one_error_line(err)
    assert rc == 2 and "fold main has no training samples" in line


def test_a_non_finite_loss_is_one_line(raw, tmp_path):
    rc, _, err = s4d("shards", "--csv", raw / "list.csv", "--no-align", "--size", "64", "--frames", "4", "--stride", "1", "--out", tmp_path / "data")
    assert rc == 0, err
    rc, _, err = s4d(
        "train",
        "--manifest",
        tmp_path / "data" / "manifest.json",
        "--size",
        "debug",
        "--epochs",
        "1",
        "--video-batch",
        "2",
        "--no-sfer",
        "--lr",
        "inf",
        "--out",
        tmp_path / "run",
        "--backend",
        "torch",
    )
    line = one_error_line(err)
    assert rc == 2 and "NaN/inf" in line


def test_an_unexpected_error_is_one_line_with_a_log_of_the_traceback(tmp_path, monkeypatch, capsys):
    import s4d.cli.main as cli

    def broken(*args, **kwargs):
        raise KeyError("index.parquet")

    monkeypatch.setenv("S4D_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.setattr(cli, "app", broken)
    with pytest.raises(SystemExit) as exit_:
        cli.run()
    assert exit_.value.code == 2
    line = one_error_line(capsys.readouterr().err)
    assert "unexpected KeyError: 'index.parquet'" in line and "--debug" in line
    logs = list((tmp_path / "logs").iterdir())
    assert len(logs) == 1 and str(logs[0]) in line and "Traceback" in logs[0].read_text()


@pytest.fixture(scope="module")
def pristine(raw, tmp_path_factory):
    out = tmp_path_factory.mktemp("pristine") / "data"
    rc, _, err = s4d("shards", "--csv", raw / "list.csv", "--no-align", "--size", "32", "--frames", "4", "--stride", "1", "--out", out)
    assert rc == 0, err
    rc, text, err = s4d("inspect", out, "--verify")
    assert rc == 0 and "verified" in text, err
    return out


@pytest.mark.parametrize("command", ["eval", "predict", "analyze-order"])
def test_a_pretraining_checkpoint_where_a_classifier_is_needed_is_one_line(pristine, tmp_path, command):
    from s4d import build_mae, save_checkpoint

    mae = save_checkpoint(build_mae("debug"), tmp_path / "mae.safetensors")
    video = next(Path(pristine).parent.glob("*.webm"), None) or tmp_path / "clip.webm"
    if not video.is_file():
        write_video(video, moving_square(6, 32, 32, seed=0))
    args = {
        "eval": ("eval", "-m", pristine / "manifest.json", "-c", mae),
        "predict": ("predict", video, "-c", mae, "--no-align"),
        "analyze-order": ("analyze", "order", "-m", pristine / "manifest.json", "-c", mae),
    }[command]
    rc, _, err = s4d(*args)
    line = one_error_line(err)
    assert rc == 2 and str(mae) in line and "pre-training (MAE) checkpoint has no classifier head" in line


@pytest.fixture
def shards(pristine, tmp_path):
    import shutil

    return Path(shutil.copytree(pristine, tmp_path / "data"))


def _edit_index(folder, edit):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = pq.read_table(folder / "index.parquet").to_pylist()
    edit(rows)
    pq.write_table(pa.Table.from_pylist(rows), folder / "index.parquet")


def _edit_summary(folder, edit):
    summary = json.loads((folder / "shards.json").read_text())
    edit(summary)
    (folder / "shards.json").write_text(json.dumps(summary))


def _zero_second_half(folder):
    """Zeros from a third of the largest tar to its end-of-archive blocks: same size, data lost."""
    tar = max(folder.glob("*.tar"), key=lambda p: p.stat().st_size)
    data = tar.read_bytes()
    a, b = len(data) // 3, len(data) - 1024
    tar.write_bytes(data[:a] + bytes(b - a) + data[b:])


def _swap_labels(rows):
    rows[0]["label"], rows[1]["label"] = rows[1]["label"], rows[0]["label"]


VERIFY_CASES = [  # (break it, what the one line must say)
    (lambda f: _edit_index(f, _swap_labels), "its own record in"),
    (lambda f: _edit_index(f, lambda rows: rows.append(dict(rows[0]))), "listed twice"),
    (lambda f: _edit_index(f, lambda rows: rows[0].update(label=9)), "labels [9] outside"),
    (lambda f: sorted(f.glob("*.idx"))[0].write_text("v1.2 1 1\njpg 0 1 x.jpg\n"), ".idx: does not match"),
    (lambda f: sorted(f.glob("*.tar"))[0].rename(f / "renamed.tar"), "shard listed in shards.json is missing"),
    (lambda f: _edit_summary(f, lambda s: s.update(shards=[], counts={})), "names shard(s) not in shards.json"),
    (lambda f: _edit_summary(f, lambda s: s["shards"][0].update(bytes=str(s["shards"][0]["bytes"]))), "shards[0].bytes: expected int"),
    (lambda f: _edit_summary(f, lambda s: s.pop("shards")), "missing field(s) ['shards']"),
    (_zero_second_half, "sha256 differs from shards.json"),
    (lambda f: (f / "index.parquet").unlink(), "index.parquet: missing"),
]


@pytest.mark.parametrize("breakage,named", VERIFY_CASES, ids=[n[:24] for _, n in VERIFY_CASES])
def test_inspect_verify_finds_what_is_wrong_in_one_line(shards, breakage, named):
    breakage(shards)
    rc, out, err = s4d("inspect", shards, "--verify")
    line = one_error_line(err)
    assert rc == 2 and named in line, line


def _file_size_limit(limit: int):
    """preexec_fn: writes past ``limit`` bytes fail with EFBIG, as a full disk fails with ENOSPC
    (Python ignores SIGXFSZ, so the write returns an error instead of killing the process)."""
    import resource

    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_a_full_disk_during_shards_is_one_line_and_the_rerun_finishes(raw, tmp_path):
    args = [
        sys.executable,
        "-m",
        "s4d",
        "shards",
        "--csv",
        str(raw / "list.csv"),
        "--no-align",
        "--size",
        "32",
        "--frames",
        "4",
        "--stride",
        "1",
        "--out",
        str(tmp_path / "data"),
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "300"}
    res = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env, preexec_fn=_file_size_limit(6000))
    line = one_error_line(res.stderr)
    assert res.returncode == 2 and "File too large" in line and str(tmp_path / "data") in line
    assert not list((tmp_path / "data").glob("*.tar"))  # no partial shard left as if complete
    res = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env)  # space freed: resume
    assert res.returncode == 0, res.stderr
    rc, out, err = s4d("inspect", tmp_path / "data", "--verify")
    assert rc == 0 and "verified" in out, err


def test_a_full_disk_during_a_checkpoint_save_does_not_block_the_next_run(pristine, tmp_path):
    import shutil

    data = Path(shutil.copytree(pristine, tmp_path / "data"))
    args = [
        sys.executable,
        "-m",
        "s4d",
        "train",
        "--manifest",
        str(data / "manifest.json"),
        "--size",
        "debug",
        "--epochs",
        "2",
        "--video-batch",
        "2",
        "--no-sfer",
        "--out",
        str(tmp_path / "run"),
        "--backend",
        "torch",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "300"}
    res = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env, preexec_fn=_file_size_limit(200_000))
    line = one_error_line(res.stderr)
    assert res.returncode == 2 and "cannot write the epoch 1 checkpoint" in line and "free space" in line
    res = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "run" / "summary.json").is_file()


def test_shards_without_raw_finds_the_release_or_says_where_it_looked(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "S4D_RAW"}
    res = subprocess.run(
        [sys.executable, "-m", "s4d", "shards", "--manifest", "mafw", "--dry-run"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(ROOT), "COLUMNS": "300"},
    )
    line = one_error_line(res.stderr)
    assert res.returncode == 2 and "looked in raw/mafw, raw/MAFW (S4D_RAW is not set)" in line and "S4D_RAW" in line
    (tmp_path / "releases" / "MAFW").mkdir(parents=True)  # found under $S4D_RAW in capitals; then the adapter reads it
    rc, out, err = s4d("shards", "--manifest", "mafw", "--dry-run", env={"S4D_RAW": str(tmp_path / "releases")})
    assert f"raw release {tmp_path / 'releases' / 'MAFW'}" in out
    assert rc == 2 and "mafw" in one_error_line(err)  # the empty folder has no split files: named by the adapter


def test_part_auto_reads_the_slurm_array():
    from preprocess.run import parse_part

    assert parse_part("auto", {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "1"}) == (2, 4)
    assert parse_part("auto", {"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "8"}) == (0, 8)
    with pytest.raises(ValueError, match="not a SLURM job array task"):
        parse_part("auto", {})
