"""``s4d predict DIR|LIST.txt --out results.parquet``: one table of windows over many files,
resumable, a bad file reported while the rest are done, a changed model refused."""

import shutil

import numpy as np
import pyarrow.parquet as pq
from PIL import Image

from s4d import build_model, save_checkpoint
from s4d.demo.faces import make_clip
from tests.media_factory import write_video
from tests.test_bad_inputs import one_error_line, s4d
from tests.test_predict import NAMES, debug_checkpoint


def _folder(tmp_path):
    media = tmp_path / "media"
    (media / "sub").mkdir(parents=True)
    write_video(media / "a.webm", make_clip("surprise", np.random.default_rng(1))[:20])
    write_video(media / "sub" / "b.webm", make_clip("sad", np.random.default_rng(2))[:28])
    Image.fromarray(make_clip("happy_onset", np.random.default_rng(3))[-1]).save(media / "c.png")
    (media / "notes.md").write_text("not media: ignored by the folder listing\n")
    return media


def test_a_folder_becomes_one_table_and_a_rerun_skips_what_is_done(tmp_path):
    ckpt = debug_checkpoint(tmp_path, stride=2)
    media = _folder(tmp_path)
    (media / "broken.mp4").write_bytes(b"\x00\x01 not a video" * 50)
    out = tmp_path / "results.parquet"
    rc, text, err = s4d("predict", media, "-c", ckpt, "--no-align", "--hop", "4", "--out", out)
    line = one_error_line(err)
    assert rc == 2 and "broken.mp4" in line  # reported, and the others done
    assert "3 of 4 file(s)" in text
    table = pq.read_table(out).to_pydict()
    assert sorted(set(table["file"])) == sorted(str(p) for p in (media / "a.webm", media / "sub" / "b.webm", media / "c.png"))
    assert set(table["kind"]) == {"video", "image"} and all(f"p_{c}" in table for c in NAMES)
    for f in set(table["file"]):  # per file, the windows tile it from the first frame
        starts = [s for s, g in zip(table["start_frame"], table["file"]) if g == f]
        assert starts[0] == 0 and starts == sorted(starts)
    face_rows = [i for i, ok in enumerate(table["face"]) if ok]
    assert face_rows and all(abs(sum(table[f"p_{c}"][i] for c in NAMES) - 1) < 1e-4 for i in face_rows)

    first = pq.read_table(out)
    (media / "broken.mp4").unlink()
    rc, text, err = s4d("predict", media, "-c", ckpt, "--no-align", "--hop", "4", "--out", out)
    assert rc == 0 and "3 done before" in text, err
    assert pq.read_table(out).equals(first)  # nothing redone, nothing lost


def test_a_table_started_with_another_model_or_settings_is_refused(tmp_path):
    ckpt = debug_checkpoint(tmp_path)
    media = _folder(tmp_path)
    out = tmp_path / "results.parquet"
    assert s4d("predict", media, "-c", ckpt, "--no-align", "--out", out)[0] == 0
    rc, _, err = s4d("predict", media, "-c", ckpt, "--no-align", "--hop", "3", "--out", out)
    assert rc == 2 and "another model or settings (hop)" in one_error_line(err)
    other = build_model("s4d", "debug", video_classes=3, image_classes=3)
    shutil.copy(ckpt.with_suffix(".json"), tmp_path / "keep.json")
    save_checkpoint(other, ckpt)  # the same path, other weights
    shutil.copy(tmp_path / "keep.json", ckpt.with_suffix(".json"))
    rc, _, err = s4d("predict", media, "-c", ckpt, "--no-align", "--out", out)
    assert rc == 2 and "model_digest" in one_error_line(err)


def test_a_list_file_names_its_missing_entries_by_line(tmp_path):
    ckpt = debug_checkpoint(tmp_path)
    media = _folder(tmp_path)
    listing = media / "list.txt"
    listing.write_text("# clips to score\na.webm\n\nsub/b.webm\nmissing.webm\n")
    out = tmp_path / "results.parquet"
    rc, text, err = s4d("predict", listing, "-c", ckpt, "--no-align", "--out", out)
    line = one_error_line(err)
    assert rc == 2 and f"{listing}:5: missing.webm: no such file" in line
    assert sorted(set(pq.read_table(out).to_pydict()["file"])) == [str(media / "a.webm"), str(media / "sub" / "b.webm")]
