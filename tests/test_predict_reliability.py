"""``s4d predict`` over many files, reliably: finished files recognised by content (a changed
file is predicted again, its stale rows replaced), a failed or cut-short table write that names
the table and blocks no re-run, an image too large to decode as one file's failure, output
destinations and inputs checked before any file is read. Real CLI, real tables, tiny inputs."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from s4d.demo.faces import make_clip
from tests.media_factory import write_video
from tests.test_bad_inputs import ROOT, one_error_line, s4d
from tests.test_predict import debug_checkpoint


def _face(seed: int, kind: str = "happy_onset") -> np.ndarray:
    return make_clip(kind, np.random.default_rng(seed))[-1]


def _media(tmp_path):
    """A folder with a short video and a BMP (uncompressed: other pixels, same byte size)."""
    media = tmp_path / "media"
    media.mkdir()
    write_video(media / "a.webm", make_clip("surprise", np.random.default_rng(1))[:12])
    Image.fromarray(_face(3)).save(media / "c.bmp")
    return media


def _predict(media, ckpt, out, *extra):
    return s4d("predict", media, "-c", ckpt, "--no-align", "--hop", "4", "--out", out, *extra)


def _rows(out, name):
    t = pq.read_table(out).to_pydict()
    return [{k: t[k][i] for k in t} for i, f in enumerate(t["file"]) if f.endswith(name)]


# ----------------------------------------------------------------------------- item 1: content keys


def test_a_changed_file_is_predicted_again_and_its_stale_rows_replaced(tmp_path):
    ckpt, media, out = debug_checkpoint(tmp_path, stride=2), _media(tmp_path), tmp_path / "r.parquet"
    assert _predict(media, ckpt, out)[0] == 0
    video_rows, (old_image,) = _rows(out, "a.webm"), _rows(out, "c.bmp")
    assert old_image["file_key"] and all(r["file_key"] == video_rows[0]["file_key"] for r in video_rows)

    image = media / "c.bmp"
    stat = image.stat()
    Image.fromarray(_face(7, "sad")).save(image)  # other pixels, same path, same size, same mtime
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert image.stat().st_size == stat.st_size
    rc, text, err = _predict(media, ckpt, out)
    assert rc == 0 and "2 of 2 file(s)" in text and "1 done before" in text, err
    (new_image,) = _rows(out, "c.bmp")  # one row: the stale one replaced, never both
    assert new_image["file_key"] != old_image["file_key"]
    assert _rows(out, "a.webm") == video_rows  # the unchanged video kept as it was
    assert len(list((tmp_path / "r.parquet.parts").glob("*.parquet"))) == 2


def test_a_table_from_before_content_keys_is_predicted_again(tmp_path):
    ckpt, media, out = debug_checkpoint(tmp_path, stride=2), _media(tmp_path), tmp_path / "r.parquet"
    assert _predict(media, ckpt, out)[0] == 0
    for part in (tmp_path / "r.parquet.parts").glob("*.parquet"):  # as an older s4d wrote them
        old = pq.read_table(part)
        pq.write_table(old.drop_columns(["file_key"]).replace_schema_metadata(None), part)
    rc, text, err = _predict(media, ckpt, out)
    assert rc == 0 and "0 done before" in text, err
    assert all(pq.read_table(out).to_pydict()["file_key"])


# ----------------------------------------------------------------------------- item 2: writes


def _s4d_with_file_limit(limit: int, *args):
    """The real CLI with every file it writes capped at ``limit`` bytes (a full disk, as the
    kernel reports it: EFBIG on the write that crosses it)."""

    def cap() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    res = subprocess.run(
        [sys.executable, "-m", "s4d", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=cap,
        env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "300"},
    )
    return res.returncode, res.stdout, res.stderr


@pytest.mark.parametrize("limit", [100, 1500])  # run.json cut short | every part cut short
def test_a_full_disk_names_the_table_and_a_rerun_after_freeing_space_finishes(tmp_path, limit):
    ckpt, media, out = debug_checkpoint(tmp_path, stride=2), _media(tmp_path), tmp_path / "r.parquet"
    rc, _, err = _s4d_with_file_limit(limit, "predict", media, "-c", ckpt, "--no-align", "--hop", "4", "--out", out)
    line = one_error_line(err)
    assert rc == 2 and f"--out {out}: cannot write" in line and "free space" in line
    parts = tmp_path / "r.parquet.parts"
    assert not list(parts.glob("*.tmp")) and not out.exists()  # nothing half-written left behind
    assert not (parts / "run.json").exists() or (parts / "run.json").stat().st_size > 0
    rc, text, err = _predict(media, ckpt, out)
    assert rc == 0 and "2 of 2 file(s)" in text, err
    assert len(set(pq.read_table(out).to_pydict()["file"])) == 2


def test_an_empty_run_json_left_by_an_older_run_does_not_block(tmp_path):
    ckpt, media, out = debug_checkpoint(tmp_path, stride=2), _media(tmp_path), tmp_path / "r.parquet"
    (tmp_path / "r.parquet.parts").mkdir()
    (tmp_path / "r.parquet.parts" / "run.json").write_bytes(b"")
    rc, text, err = _predict(media, ckpt, out)
    assert rc == 0 and "2 of 2 file(s)" in text, err
    assert (tmp_path / "r.parquet.parts" / "run.json").stat().st_size > 0


@pytest.mark.parametrize("damage", [b"", b"PAR1 not really parquet PAR1"])
def test_a_corrupt_part_names_the_table_and_the_part(tmp_path, damage):
    ckpt, media, out = debug_checkpoint(tmp_path, stride=2), _media(tmp_path), tmp_path / "r.parquet"
    assert _predict(media, ckpt, out)[0] == 0
    first = pq.read_table(out)
    part = sorted((tmp_path / "r.parquet.parts").glob("*.parquet"))[0]
    part.write_bytes(damage)
    rc, text, err = _predict(media, ckpt, out)
    line = one_error_line(err)
    assert rc == 2 and f"--out {out}: the part {part}" in line and "delete that part and re-run" in line
    assert "file(s)" not in text  # found before any file was predicted
    part.unlink()
    rc, text, err = _predict(media, ckpt, out)
    assert rc == 0 and "1 done before" in text, err
    assert sorted(pq.read_table(out).to_pydict()["file"]) == sorted(first.to_pydict()["file"])


# ----------------------------------------------------------------------------- item 3: huge images


@pytest.fixture(scope="module")
def bomb(tmp_path_factory):
    """A ~110 KB PNG that decodes to 30000 x 30000 (900 Mpx: over PIL's decompression-bomb limit)."""
    path = tmp_path_factory.mktemp("bomb") / "bomb.png"
    Image.new("1", (30000, 30000)).save(path)
    assert path.stat().st_size < 200_000
    return path


def test_an_image_too_large_to_decode_is_one_files_failure(tmp_path, bomb):
    ckpt, media, out = debug_checkpoint(tmp_path, stride=2), _media(tmp_path), tmp_path / "r.parquet"
    (media / "bomb.png").write_bytes(bomb.read_bytes())
    for _ in range(2):  # and again on a re-run: the others stay done
        rc, text, err = _predict(media, ckpt, out)
        line = one_error_line(err)
        assert rc == 2 and "bomb.png" in line and "DecompressionBombError" in line
        assert "2 of 3 file(s)" in text
        assert sorted(p.rsplit("/", 1)[1] for p in set(pq.read_table(out).to_pydict()["file"])) == ["a.webm", "c.bmp"]
    assert "2 done before" in text


def test_an_image_too_large_to_decode_alone_is_one_line(tmp_path, bomb):
    rc, _, err = s4d("predict", bomb, "-c", debug_checkpoint(tmp_path), "--no-align")
    line = one_error_line(err)
    assert rc == 2 and str(bomb) in line and "DecompressionBombError" in line


# ----------------------------------------------------------------------------- items 4-6: checked first

DESTINATIONS = [  # (flag, path under the blocking file, several inputs)
    ("--out", "x.json", False),
    ("--out", "folder", True),
    ("--out", "r.parquet", False),
    ("--plot", "t.png", False),
    ("--plot", "plots", True),
]


@pytest.mark.parametrize("flag,name,several", DESTINATIONS)
def test_an_unwritable_destination_is_one_line_before_any_input(tmp_path, flag, name, several):
    ckpt, media = debug_checkpoint(tmp_path, stride=2), _media(tmp_path)
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder is needed\n")
    inputs = [media / "a.webm", media / "c.bmp"] if several else [media / "a.webm"]
    rc, text, err = s4d("predict", *inputs, "-c", ckpt, "--no-align", flag, blocker / name)
    line = one_error_line(err)
    assert rc == 2 and f"{flag} {blocker / name}: cannot write there" in line
    assert text == ""  # no input was predicted
    assert blocker.read_text() == "a file where a folder is needed\n"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_is_one_line_before_any_input(tmp_path):
    ckpt, media = debug_checkpoint(tmp_path, stride=2), _media(tmp_path)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        rc, text, err = s4d("predict", media, "-c", ckpt, "--no-align", "--out", locked / "r.parquet")
    finally:
        locked.chmod(0o700)
    assert rc == 2 and "Permission denied" in one_error_line(err) and text == ""


def test_a_list_that_is_not_utf8_names_its_line_and_byte(tmp_path):
    ckpt, media = debug_checkpoint(tmp_path, stride=2), _media(tmp_path)
    listing = media / "list.txt"
    listing.write_bytes("a.webm\ncaf\u00e9.bmp\n".encode("latin-1"))
    rc, text, err = s4d("predict", listing, "-c", ckpt, "--no-align", "--out", tmp_path / "r.parquet")
    line = one_error_line(err)
    assert rc == 2 and f"{listing}: line 2 (byte 10) is not UTF-8" in line and text == ""


@pytest.mark.parametrize(
    "target,says", [("media", "is a folder: give --out RESULTS.parquet"), ("media/list.txt", "is a list of inputs: give --out RESULTS.parquet")]
)
def test_a_folder_or_list_without_a_table_is_refused_by_name(tmp_path, target, says):
    ckpt, media = debug_checkpoint(tmp_path, stride=2), _media(tmp_path)
    (media / "list.txt").write_text("a.webm\n")
    rc, text, err = s4d("predict", media / "a.webm", tmp_path / target, "-c", ckpt, "--no-align")
    line = one_error_line(err)
    assert rc == 2 and f"{tmp_path / target} {says}" in line and "no such file" not in line
    assert text == ""  # refused before a.webm was predicted


@pytest.mark.parametrize("field,value", [("stored_size", 100_000), ("stride", 10_000), ("crop", [0, 0, 9000, 9000]), ("fps", float("inf"))])
def test_a_checkpoint_config_declaring_huge_input_is_refused_before_sizing(tmp_path, field, value):
    """The ``input`` record in a checkpoint's JSON config sizes predict's aligned frames: it is
    bounded like an ONNX file's metadata, one line naming the JSON file and the field."""
    import json

    from preprocess.errors import InputError
    from s4d.infer import PredictConfig, Predictor

    ckpt = debug_checkpoint(tmp_path)
    meta_path = ckpt.with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    meta["input"][field] = value
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(InputError, match=f"{meta_path}: metadata input.{field} is .*checkpoint's JSON config is damaged"):
        Predictor(PredictConfig(str(ckpt), device="cpu"))
