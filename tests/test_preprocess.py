"""The preprocessing run end to end on data the tests make, and on real face media."""

import hashlib
import json
import tarfile

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from preprocess.faces import Face, NotEnoughFaces, align_clip, fill_nearest, warp_matrix
from preprocess.manifest import load_manifest, parse_manifest
from preprocess.run import SampleProcessor, parse_part, run_shards
from preprocess.shards.encoding import unpack_info
from preprocess.shards.folder import finalize
from s4d.cli import app

from .media_factory import moving_square, write_frames, write_image, write_video
from .test_adapters import make_dfew


def csv_manifest(tmp_path, **pre):
    return parse_manifest(
        {
            "name": "mine",
            "modality": "video",
            "classes": ["calm", "upset"],
            "layout": {"adapter": "csv", "options": {"csv": "list.csv"}},
            "preprocess": {"align": False, "size": 48, "shard_samples": 2, **pre},
            "partitions": ["train", "test"],
            "folds": {"main": {"train": ["train"], "test": ["test"]}},
            "clip": {"frames": 16, "stride": 2},
        },
        tmp_path / "mine.json",
    )


def make_raw(root, n=5):
    root.mkdir(parents=True, exist_ok=True)
    rows = ["path,label,split"]
    for i in range(n):
        write_video(root / f"v{i}.webm", moving_square(10 + i, seed=i))
        rows.append(f"v{i}.webm,{['calm', 'upset'][i % 2]},{'train' if i < 3 else 'test'}")
    write_frames(root / "frames" / "f0", moving_square(6, seed=9))
    rows.append("frames/f0,upset,test")
    (root / "broken.webm").write_bytes((root / "v0.webm").read_bytes()[:200])  # truncated
    rows.append("broken.webm,calm,train")
    (root / "list.csv").write_text("\n".join(rows) + "\n")
    return root


def digests(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.tar")) + sorted(folder.glob("*.idx"))}


def test_run_writes_shards_index_and_reports_problems(tmp_path):
    raw = make_raw(tmp_path / "raw")
    m = csv_manifest(tmp_path)
    out = tmp_path / "out"
    summary = run_shards(m, raw, out)
    assert summary.planned == 4 and summary.pending == [] and summary.problems == 1
    result = finalize(m, out)
    assert result["counts"] == {"train": 3, "test": 3}
    assert [p["id"] for p in result["problems"]] == ["broken.webm"]
    assert "broken.webm" in result["problems"][0]["reason"]
    for shard in result["shards"]:
        assert hashlib.sha256((out / shard["file"]).read_bytes()).hexdigest() == shard["sha256"]
    index = pq.read_table(out / "index.parquet").to_pylist()
    by_key = {r["key"]: r for r in index}
    assert by_key["v1"]["label"] == 1 and by_key["v1"]["frames"] == 11 and by_key["v1"]["partition"] == "train"
    assert by_key["frames_f0"]["frames"] == 6 and by_key["frames_f0"]["fps"] == 25.0
    with tarfile.open(out / by_key["v4"]["shard"]) as tf:
        info = unpack_info(tf.extractfile("v4.info").read())
        meta = json.loads(tf.extractfile("v4.json").read())
        assert info == {"label": 0, "frames": 14, "fps_milli": 25000, "faces_found": 0}
        assert meta["original_id"] == "v4.webm" and tf.extractfile("v4.webm").read()[:4] == b"\x1aE\xdf\xa3"  # EBML/WebM


def test_kill_and_resume_gives_identical_shards(tmp_path, monkeypatch):
    raw = make_raw(tmp_path / "raw")
    m = csv_manifest(tmp_path)
    run_shards(m, raw, tmp_path / "straight")
    finalize(m, tmp_path / "straight")

    real_call = SampleProcessor.__call__
    calls = {"n": 0}

    def dies_on_the_fourth(self, sample):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt  # killed in the middle of the second shard
        return real_call(self, sample)

    monkeypatch.setattr(SampleProcessor, "__call__", dies_on_the_fourth)
    with pytest.raises(KeyboardInterrupt):
        run_shards(m, raw, tmp_path / "resumed")
    leftovers = sorted(p.name for p in (tmp_path / "resumed").iterdir())
    assert leftovers == ["plan.json", "train-00000.idx", "train-00000.record.json", "train-00000.tar"]  # no partial shard
    monkeypatch.setattr(SampleProcessor, "__call__", real_call)
    again = run_shards(m, raw, tmp_path / "resumed")
    assert again.done_before == 1 and again.done_now == 3
    finalize(m, tmp_path / "resumed")
    assert digests(tmp_path / "resumed") == digests(tmp_path / "straight")
    assert (tmp_path / "resumed" / "shards.json").read_text() == (tmp_path / "straight" / "shards.json").read_text()
    assert run_shards(m, raw, tmp_path / "resumed").done_now == 0  # idempotent


def test_parts_split_the_work_and_merge(tmp_path):
    raw = make_raw(tmp_path / "raw")
    m = csv_manifest(tmp_path)
    out = tmp_path / "parts"
    first = run_shards(m, raw, out, part=(0, 2))
    assert first.done_now == 2 and len(first.pending) == 2
    with pytest.raises(ValueError, match="2 shard\\(s\\) not done yet"):
        finalize(m, out)
    second = run_shards(m, raw, out, part=(1, 2))
    assert second.done_now == 2 and second.pending == []
    run_shards(m, raw, tmp_path / "whole")
    finalize(m, out)
    finalize(m, tmp_path / "whole")
    assert digests(out) == digests(tmp_path / "whole")
    assert parse_part("3/4") == (3, 4)
    with pytest.raises(ValueError, match="--part"):
        parse_part("4/4")


def test_two_worker_processes_give_the_same_shards(tmp_path):
    raw = make_raw(tmp_path / "raw")
    m = csv_manifest(tmp_path)
    run_shards(m, raw, tmp_path / "one")
    run_shards(m, raw, tmp_path / "two", workers=2)
    assert digests(tmp_path / "one") == digests(tmp_path / "two")


def test_changed_raw_data_is_not_mixed_into_old_shards(tmp_path):
    raw = make_raw(tmp_path / "raw")
    m = csv_manifest(tmp_path)
    run_shards(m, raw, tmp_path / "out")
    write_video(raw / "v9.webm", moving_square(8, seed=3))
    with open(raw / "list.csv", "a") as fh:
        fh.write("v9.webm,calm,test\n")
    with pytest.raises(ValueError, match="changed since this output was started"):
        run_shards(m, raw, tmp_path / "out")


def test_dfew_release_to_shards(tmp_path):
    make_dfew(tmp_path / "DFEW")
    for folder in (tmp_path / "DFEW" / "Clip" / "jpg_256").iterdir():  # real frames instead of stubs
        for f in folder.iterdir():
            f.unlink()
        write_frames(folder, moving_square(4, 64, 64, seed=int(folder.name)))
    m = load_manifest("dfew")
    out = tmp_path / "shards"
    run_shards(m, tmp_path / "DFEW", out)
    result = finalize(m, out)
    assert result["counts"] == {f"set_{k}": 5 for k in range(1, 6)}
    index = pq.read_table(out / "index.parquet").to_pylist()
    dfew_names = {1: "happy", 2: "sad", 3: "neutral", 4: "angry", 5: "surprise", 6: "disgust", 7: "fear"}
    for row in index:
        assert m.classes[row["label"]] == dfew_names[int(row["key"]) % 7 + 1]
        assert row["partition"] == f"set_{(int(row['key']) - 1) // 5 + 1}"


def test_affectnet_images_are_cropped_to_their_face_box(tmp_path):
    root = tmp_path / "AffectNet"
    img = np.zeros((200, 300, 3), np.uint8)
    img[50:150, 100:200] = (255, 0, 0)  # the "face": a red box
    (root / "Manually_Annotated_Images" / "1").mkdir(parents=True)
    write_image(root / "Manually_Annotated_Images" / "1" / "a.jpg", img)
    lists = root / "Manually_Annotated_file_lists"
    lists.mkdir()
    header = "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal\n"
    (lists / "training.csv").write_text(header + "1/a.jpg,100,50,100,100,0,3,0,0\n1/bad.jpg,0,0,10,10,0,1,0,0\n")
    (root / "Manually_Annotated_Images" / "1" / "bad.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (lists / "validation.csv").write_text(header + "1/a.jpg,100,50,100,100,0,7,0,0\n")
    m = load_manifest("affectnet7")
    out = tmp_path / "out"
    run_shards(m, root, out)
    result = finalize(m, out)
    assert result["counts"] == {"training": 1, "validation": 0} and result["excluded"] == {"expression contempt": 1}
    assert [p["id"] for p in result["problems"]] == ["1/bad.jpg"] and "unreadable image" in result["problems"][0]["reason"]
    import cv2

    with tarfile.open(out / "training-00000.tar") as tf:
        data = np.frombuffer(tf.extractfile("1_a.jpg").read(), np.uint8)
    crop = cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    assert crop.shape == (224, 224, 3)
    red = (crop[..., 0] > 150) & (crop[..., 1] < 80)
    assert 0.5 < red.mean() < 0.75  # the box fills the crop, with the 25% margin around it
    ys, xs = np.nonzero(red)
    assert abs(ys.mean() - 111.5) < 3 and abs(xs.mean() - 111.5) < 3


def test_alignment_levels_the_eye_line():
    face = Face((100, 100, 200, 200), 0.99, np.array([[130, 140], [170, 160], [150, 160], [135, 180], [165, 185]], float))
    m = warp_matrix(face.center, face.side * 1.25, face.eye_angle, 160)
    eyes = np.c_[face.landmarks[:2], np.ones(2)] @ m.T
    assert abs(eyes[0, 1] - eyes[1, 1]) < 1e-6 and eyes[0, 0] < eyes[1, 0]
    centre = m @ np.array([*face.center, 1.0])
    np.testing.assert_allclose(centre, [80, 80], atol=1e-6)


def test_frames_without_a_face_borrow_the_nearest_and_too_few_faces_skip():
    f = Face((0, 0, 10, 10), 0.99, np.zeros((5, 2)))
    g = Face((5, 5, 15, 15), 0.99, np.zeros((5, 2)))
    assert fill_nearest([None, f, None, None, g, None]) == [f, f, f, g, g, g]
    frames = np.zeros((4, 32, 32, 3), np.uint8)
    clip = align_clip(frames, [f, None, None, g], 0.25, 16, 2)
    assert clip.faces_found == 2 and clip.faces_filled == 2 and clip.frames.shape == (4, 16, 16, 3) and clip.span == (0, 4)
    with pytest.raises(NotEnoughFaces, match="a face in 1 of 4 frames; a clip needs 2"):
        align_clip(frames, [f, None, None, None], 0.25, 16, 2)
    with pytest.raises(NotEnoughFaces, match="a face in 0 of 4 frames"):
        align_clip(frames, [None] * 4, 0.25, 16, 1)


def test_a_clip_with_a_face_in_part_of_its_frames_keeps_that_span():
    """A phone clip with a face for 3 s of 7 s (43% of its frames): one training window of face
    frames (16 x stride 4 = 64) is there, so the clip is kept, cut to where the face is."""
    f = Face((0, 0, 10, 10), 0.99, np.zeros((5, 2)))
    faces = [None] * 100 + [f] * 75  # 175 frames at 25 fps = 7 s, the face in the last 3 s
    frames = np.zeros((175, 32, 32, 3), np.uint8)
    clip = align_clip(frames, faces, 0.25, 16, 64)
    assert clip.span == (100, 175) and clip.frames.shape[0] == 75 and clip.faces_found == 75
    with pytest.raises(NotEnoughFaces, match="a face in 75 of 175 frames; a clip needs 80"):
        align_clip(frames, faces, 0.25, 16, 80)
    short = align_clip(frames[:10], [f] * 10, 0.25, 16, 64)  # shorter than a window: its length
    assert short.frames.shape[0] == 10


def test_real_face_is_found_and_centred_and_no_face_is_reported(tmp_path, fixtures_dir):
    import shutil

    from preprocess.faces import FaceDetector

    raw = tmp_path / "raw"
    raw.mkdir()
    shutil.copy(fixtures_dir / "single_face.mp4", raw / "face.mp4")
    shutil.copy(fixtures_dir / "no_face.mp4", raw / "noface.mp4")
    (raw / "list.csv").write_text("path,label,split\nface.mp4,calm,train\nnoface.mp4,upset,test\n")
    m = csv_manifest(tmp_path, align=True, size=160)
    out = tmp_path / "out"
    run_shards(m, raw, out)
    result = finalize(m, out)
    assert result["counts"] == {"train": 1, "test": 0}
    reason = result["problems"][0]["reason"]
    assert "noface.mp4: a face in" in reason and "a clip needs 32 (one training window" in reason
    assert int(reason.split("a face in ")[1].split(" of ")[0]) <= 3  # at most a stray false positive
    row = pq.read_table(out / "index.parquet").to_pylist()[0]
    assert row["frames"] == 72 and row["faces_found"] >= 70
    import av

    with tarfile.open(out / row["shard"]) as tf, av.open(tf.extractfile("face.webm")) as c:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
    faces = FaceDetector("cpu").detect(frames[::12])
    for face in faces:  # in the aligned crop the face is central, upright and fills it
        assert face is not None
        cx, cy = face.center
        assert abs(cx - 80) < 16 and abs(cy - 80) < 20
        assert abs(face.eye_angle) < 6
        assert 90 < face.side < 160


def test_shards_and_inspect_commands(tmp_path):
    raw = make_raw(tmp_path / "raw", n=3)
    manifest_path = tmp_path / "mine.json"
    manifest_path.write_text(json.dumps(csv_manifest(tmp_path).to_dict()))
    runner = CliRunner()
    res = runner.invoke(app, ["shards", "--manifest", str(manifest_path), "--raw", str(raw), "--data-root", str(tmp_path / "data")])
    assert res.exit_code == 2 and "1 of 5 samples skipped (20.0% > --max-skipped 5%)" in res.output  # written, but not in silence
    assert "mine: 4 samples" in res.output and "1 sample(s) skipped" in res.output and "train 3 kept / 1 skipped" in res.output
    res = runner.invoke(
        app, ["shards", "--manifest", str(manifest_path), "--raw", str(raw), "--data-root", str(tmp_path / "data"), "--max-skipped", "0.25"]
    )
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["inspect", str(tmp_path / "data" / "mine")])
    assert res.exit_code == 0 and "train: 3 (calm 2, upset 1)" in res.output and "test: 1 (upset 1)" in res.output
    res = runner.invoke(app, ["shards", "--manifest", "nonexistent", "--raw", str(raw)])
    assert res.exit_code == 2 and "manifest 'nonexistent' not found" in res.output


def test_verify_shards_catches_missing_corrupt_and_mismatched(tmp_path):
    from preprocess.manifest import ManifestError
    from preprocess.shards.verify import verify_shards

    raw = make_raw(tmp_path / "raw")
    m = csv_manifest(tmp_path)
    out = tmp_path / "out"
    run_shards(m, raw, out)
    finalize(m, out)
    assert verify_shards(m, out, checksums=True)["counts"] == {"train": 3, "test": 3}
    tar = out / "test-00000.tar"
    data = bytearray(tar.read_bytes())
    data[1000] ^= 0xFF  # one flipped byte: same size, different content
    tar.write_bytes(bytes(data))
    verify_shards(m, out)  # sizes still agree
    with pytest.raises(ManifestError, match="test-00000.tar: sha256 differs"):
        verify_shards(m, out, checksums=True)
    tar.write_bytes(bytes(data[:-512]))
    with pytest.raises(ManifestError, match="test-00000.tar: .* bytes, shards.json says"):
        verify_shards(m, out)
    tar.unlink()
    with pytest.raises(ManifestError, match="test-00000.tar: shard listed in shards.json is missing"):
        verify_shards(m, out)
    other = parse_manifest({**json.loads(json.dumps(m.to_dict())), "classes": ["upset", "calm"]}, tmp_path / "m.json")
    with pytest.raises(ManifestError, match="classes .* differ"):
        verify_shards(other, out)


def test_own_csv_becomes_a_manifest(tmp_path):
    from preprocess.manifest import ManifestError
    from preprocess.own_data import manifest_from_csv

    raw = make_raw(tmp_path / "raw", n=4)
    m = manifest_from_csv(raw / "list.csv", "mine", align=False)
    assert m.classes == ("calm", "upset") and m.partitions == ("test", "train") and m.modality == "video"
    assert m.folds["main"].train == ("train",) and m.folds["main"].test == ("test",)
    (raw / "cv.csv").write_text("path,label,fold\nv0.webm,calm,a\nv1.webm,upset,b\nv2.webm,calm,c\n")
    cv = manifest_from_csv(raw / "cv.csv")
    assert set(cv.folds) == {"a", "b", "c"} and cv.folds["b"].train == ("a", "c") and cv.folds["b"].test == ("b",)
    (raw / "mixed.csv").write_text("path,label\nv0.webm,calm\npic.jpg,upset\n")
    with pytest.raises(ManifestError, match="mixes images and videos"):
        manifest_from_csv(raw / "mixed.csv")
    res = CliRunner().invoke(
        app, ["shards", "--csv", str(raw / "list.csv"), "--no-align", "--data-root", str(tmp_path / "data"), "--max-skipped", "0.2"]
    )
    assert res.exit_code == 0, res.output
    assert "manifest for training" in res.output and (tmp_path / "data" / "list" / "manifest.json").is_file()
    res = CliRunner().invoke(app, ["inspect", str(tmp_path / "data" / "list"), "--verify"])
    assert res.exit_code == 0 and "verified: 2 shards" in res.output, res.output


def test_changed_labels_or_settings_are_not_mixed_into_old_shards(tmp_path):
    raw = make_raw(tmp_path / "raw")
    run_shards(csv_manifest(tmp_path), raw, tmp_path / "out", part=(0, 2))
    with pytest.raises(ValueError, match="preprocess changed since this output was started"):
        run_shards(csv_manifest(tmp_path, size=32), raw, tmp_path / "out", part=(1, 2))
    (raw / "list.csv").write_text((raw / "list.csv").read_text().replace("v1.webm,upset", "v1.webm,calm"))
    with pytest.raises(ValueError, match="the samples or their labels changed"):
        run_shards(csv_manifest(tmp_path), raw, tmp_path / "out", part=(1, 2))


def test_tiny_or_odd_media_are_reported_not_fatal(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    write_image(raw / "tiny.jpg", np.zeros((10, 10, 3), np.uint8))
    write_image(raw / "ok.jpg", moving_square(1, 120, 100)[0])
    (raw / "list.csv").write_text("path,label,split\ntiny.jpg,calm,train\nok.jpg,upset,train\n")
    m = parse_manifest(
        {
            **json.loads(json.dumps(csv_manifest(tmp_path).to_dict())),
            "modality": "image",
            "clip": None,
            "preprocess": {"align": True, "size": 48, "codec": "jpeg", "quality": 90},
        },
        tmp_path / "img.json",
    )
    out = tmp_path / "out"
    run_shards(m, raw, out)
    result = finalize(m, out)
    reasons = {p["id"]: p["reason"] for p in result["problems"]}
    assert "tiny.jpg" in reasons["tiny.jpg"] and "too small" in reasons["tiny.jpg"]
    assert "ok.jpg: no face found" in reasons["ok.jpg"]  # a readable image without a face: reported too
    assert result["counts"]["train"] == 0


def test_bad_csv_rows_and_summaries_are_one_clear_line(tmp_path):
    raw = make_raw(tmp_path / "raw", n=2)
    (raw / "holes.csv").write_text("path,label,split\nv0.webm,calm,train\nv1.webm\n,upset,test\n")
    res = CliRunner().invoke(app, ["shards", "--csv", str(raw / "holes.csv"), "--data-root", str(tmp_path / "d")])
    assert res.exit_code == 2 and "holes.csv:3: empty or missing field(s)" in res.output and "Traceback" not in res.output
    m = csv_manifest(tmp_path)
    out = tmp_path / "out"
    run_shards(m, raw, out)
    finalize(m, out)
    (out / "shards.json").write_text("{ broken")
    res = CliRunner().invoke(app, ["inspect", str(out)])
    assert res.exit_code == 2 and "shards.json: not valid JSON" in res.output


def test_parts_then_merge_only_from_the_command_line(tmp_path):
    raw = make_raw(tmp_path / "raw")
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(csv_manifest(tmp_path).to_dict()))
    base = ["shards", "--manifest", str(path), "--raw", str(raw), "--out", str(tmp_path / "o"), "--max-skipped", "0.2"]
    runner = CliRunner()
    first = runner.invoke(app, [*base, "--part", "0/2"])
    assert first.exit_code == 0 and "when every part has finished" in first.output
    early = runner.invoke(app, [*base, "--merge-only"])
    assert early.exit_code == 2 and "not done yet" in early.output
    assert runner.invoke(app, [*base, "--part", "1/2"]).exit_code == 0
    merged = runner.invoke(app, [*base, "--merge-only"])
    assert merged.exit_code == 0 and "mine: 6 samples" in merged.output


# ----------------------------------------------------------------------------- frame geometry and face framing


def three_bands(h=100, w=200):
    """A non-square frame: red | green | blue vertical bands (quarter, half, quarter)."""
    img = np.zeros((h, w, 3), np.uint8)
    img[:, : w // 4] = (255, 0, 0)
    img[:, w // 4 : 3 * w // 4] = (0, 255, 0)
    img[:, 3 * w // 4 :] = (0, 0, 255)
    return img


def colour_share(img, channel):
    return float(((img[..., channel] > 150) & (img.sum(-1) < 400)).mean())


def test_squash_keeps_the_whole_frame_and_crop_its_centre_square():
    from preprocess.faces import fit_frame

    img = three_bands()
    squashed, cropped = fit_frame(img, 40, "squash"), fit_frame(img, 40, "crop")
    assert squashed.shape == cropped.shape == (40, 40, 3)
    assert abs(colour_share(squashed, 0) - 0.25) < 0.03 and abs(colour_share(squashed, 2) - 0.25) < 0.03  # bands kept, narrowed
    assert colour_share(cropped, 0) == colour_share(cropped, 2) == 0.0 and colour_share(cropped, 1) == 1.0  # only the middle
    assert (squashed[:, :8] == (255, 0, 0)).all() and (squashed[:, -8:] == (0, 0, 255)).all()
    square = moving_square(1, 224, 224)[0]  # VoxCeleb2's 224 px frames are stored as they are, either way
    assert (fit_frame(square, 224, "squash") == square).all() and (fit_frame(square, 224, "crop") == square).all()


def test_reference_framing_squashes_the_tight_levelled_face_box():
    from preprocess.faces import align, rect_matrix

    frame = np.zeros((200, 200, 3), np.uint8)
    frame[40:120, 60:100] = 255  # the face box: 40 wide, 80 tall
    face = Face((60, 40, 100, 120), 0.99, np.array([[70, 60], [90, 60], [80, 80], [72, 100], [88, 100]], float))
    tight = align(frame, face, 0.0, 32, "squash")
    assert tight.shape == (32, 32, 3) and tight[1:-1, 1:-1].min() == 255  # the box fills the output
    ours = align(frame, face, 0.25, 32, "crop")  # a square of 1.25 x the longer side: the face is 40/100 wide
    assert abs((ours[..., 0] > 128).mean() - (40 * 80) / (100 * 100)) < 0.05
    tilted = Face(face.box, 0.99, np.array([[70, 60], [90, 70], [80, 80], [72, 100], [88, 100]], float))
    m = rect_matrix(tilted.center, 40, 80, tilted.eye_angle, (40, 80))
    eyes = np.c_[tilted.landmarks[:2], np.ones(2)] @ m.T
    assert abs(eyes[0, 1] - eyes[1, 1]) < 1e-6 and eyes[0, 0] < eyes[1, 0]  # the eye line is level
    np.testing.assert_allclose(m @ np.array([*tilted.center, 1.0]), [20, 40], atol=1e-9)
    corners = np.array([[60, 40, 1], [100, 120, 1]], float) @ rect_matrix(face.center, 40, 80, 0.0, (40, 80)).T
    np.testing.assert_allclose(corners, [[0, 0], [40, 80]], atol=1e-9)  # unrotated: box corners to output corners


def test_affectnet_box_is_squashed_or_squared(tmp_path):
    from preprocess.faces import crop_box

    img = np.zeros((200, 300, 3), np.uint8)
    img[50:150, 100:150] = 255  # a box 50 wide, 100 tall
    box = (100.0, 50.0, 50.0, 100.0)
    assert crop_box(img, box, 0.0, 32, "squash")[1:-1, 1:-1].min() == 255
    assert abs((crop_box(img, box, 0.0, 32, "crop")[..., 0] > 128).mean() - 0.5) < 0.05


def image_manifest(tmp_path, geometry):
    raw = {
        **json.loads(json.dumps(csv_manifest(tmp_path).to_dict())),
        "modality": "image",
        "clip": None,
        "preprocess": {"align": False, "size": 40, "codec": "jpeg", "quality": 95, "geometry": geometry},
    }
    return parse_manifest(raw, tmp_path / f"img-{geometry}.json")


def test_geometry_runs_through_the_shards_and_a_changed_one_is_refused(tmp_path):
    import cv2

    raw = tmp_path / "raw"
    raw.mkdir()
    write_image(raw / "wide.png", three_bands())
    (raw / "list.csv").write_text("path,label,split\nwide.png,calm,train\n")
    stored = {}
    for geometry in ("squash", "crop"):
        out = tmp_path / geometry
        run_shards(image_manifest(tmp_path, geometry), raw, out)
        assert json.loads((out / "plan.json").read_text())["preprocess"]["geometry"] == geometry
        with tarfile.open(out / "train-00000.tar") as tf:
            data = np.frombuffer(tf.extractfile("wide.jpg").read(), np.uint8)
        stored[geometry] = cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    assert colour_share(stored["squash"], 0) > 0.2 and colour_share(stored["crop"], 0) == 0.0
    with pytest.raises(ValueError, match=r"preprocess changed since this output was started \(geometry: crop -> squash\)"):
        run_shards(image_manifest(tmp_path, "squash"), raw, tmp_path / "crop")
    plan = tmp_path / "crop" / "plan.json"  # a plan written before geometry existed was made by cropping
    old = json.loads(plan.read_text())
    del old["preprocess"]["geometry"]
    plan.write_text(json.dumps(old))
    assert run_shards(image_manifest(tmp_path, "crop"), raw, tmp_path / "crop").done_now == 0
    with pytest.raises(ValueError, match=r"geometry: crop -> squash"):
        run_shards(image_manifest(tmp_path, "squash"), raw, tmp_path / "crop")


def test_predict_frames_faces_with_the_geometry_the_checkpoint_records(tmp_path):
    import dataclasses

    from s4d import build_model, save_checkpoint
    from s4d.checkpoint import CheckpointError
    from s4d.infer import PredictConfig, Predictor

    model = build_model("s4d", "debug", video_classes=2, image_classes=2)
    model.config = dataclasses.replace(model.config, class_names={"video": ("a", "b"), "image": ("a", "b")})
    img = three_bands(64, 128)
    crops = {}
    for geometry in ("squash", "crop", None):
        path = tmp_path / f"{geometry}.safetensors"
        recorded = {"stride": 4, "fps": None, "crop": None, "align": False, "margin": 0.25, "stored_size": 64}
        save_checkpoint(model, path, extra={"input": {**recorded, **({"geometry": geometry} if geometry else {})}})
        predictor = Predictor(PredictConfig(str(path), device="cpu", align=False))
        crops[geometry] = predictor.prep.frame(img, None)
        face = Face((20, 8, 60, 56), 0.99, np.array([[30, 20], [50, 20], [40, 30], [32, 44], [48, 44]], float))
        from preprocess.faces import align

        assert (predictor.prep.frame(img, face) == align(img, face, 0.25, 64, geometry or "crop")[:64, :64]).all()
    assert colour_share(crops["squash"], 0) > 0.2 and colour_share(crops["crop"], 0) == 0.0
    assert (crops[None] == crops["crop"]).all()  # checkpoints from before the setting: today's crop
    bad = tmp_path / "bad.safetensors"
    save_checkpoint(model, bad, extra={"input": {"geometry": "stretch"}})
    with pytest.raises(CheckpointError, match="input.geometry must be squash or crop"):
        Predictor(PredictConfig(str(bad), device="cpu"))


def test_sixteen_bit_greyscale_images_are_scaled_not_clipped(tmp_path):
    import cv2

    from preprocess.media import read_image

    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "g16.png"), ramp)
    rgb = read_image(tmp_path / "g16.png")
    assert rgb.shape == (64, 64, 3) and rgb.dtype == np.uint8
    assert abs(float(rgb.mean()) - 127.5) < 1 and rgb.min() == 0 and rgb.max() == 255  # PIL's convert gave ~254 everywhere


def test_a_phone_video_is_turned_upright_by_its_display_matrix(tmp_path):
    """An MP4 whose track header says "rotate 90 degrees clockwise" (how phones store portrait
    video): frames come out upright, taller than wide."""
    import struct

    import av

    from preprocess.media import read_video

    path = tmp_path / "landscape.mp4"
    with av.open(str(path), "w") as out:
        s = out.add_stream("mpeg4", rate=25)
        s.width, s.height, s.pix_fmt = 64, 32, "yuv420p"
        for _ in range(3):
            f = np.zeros((32, 64, 3), np.uint8)
            f[:, :32, 0] = 255  # the left half red
            out.mux(s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        out.mux(s.encode(None))
    data = path.read_bytes()
    identity = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
    at = data.find(identity, data.find(b"tkhd"))  # the track header's matrix, after the movie header's
    rotated = tmp_path / "portrait.mp4"
    rotated.write_bytes(data[:at] + struct.pack(">9i", 0, 0x10000, 0, -0x10000, 0, 0, 0, 0, 0x40000000) + data[at + 36 :])
    plain, _ = read_video(path)
    upright, _ = read_video(rotated)
    assert plain.shape[1:3] == (32, 64) and upright.shape[1:3] == (64, 32)
    assert upright[0, :32, :, 0].mean() > 200 and upright[0, 32:, :, 0].mean() < 30  # left half -> top half (clockwise)
