"""Each layout adapter on a small fake tree that copies the official layout and file formats."""

import pytest

from preprocess.adapters import list_samples, sanitise_key
from preprocess.manifest import ManifestError, load_manifest, parse_manifest


def touch_frames(folder, n=3):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(1, n + 1):
        (folder / f"{i:05d}.jpg").write_bytes(b"jpg")


def make_dfew(root, missing=()):
    ids = {k: [f"{5 * (k - 1) + j:05d}" for j in range(1, 6)] for k in range(1, 6)}  # 25 clips
    labels = {vid: (int(vid) % 7) + 1 for vids in ids.values() for vid in vids}
    split = root / "EmoLabel_DataSplit"
    for k in range(1, 6):
        for role, members in (("test", ids[k]), ("train", [v for f, vs in ids.items() if f != k for v in vs])):
            d = split / f"{role}(single-labeled)"
            d.mkdir(parents=True, exist_ok=True)
            rows = ["video_name,label"] + [f"{int(v)},{labels[v]}" for v in members]  # ids written unpadded
            (d / f"set_{k}.csv").write_text("\n".join(rows) + "\n")
    for vid in labels:
        if vid not in missing:
            touch_frames(root / "Clip" / "jpg_256" / vid)
    return ids, labels


def test_dfew_labels_and_folds_land_where_the_official_files_say(tmp_path):
    ids, labels = make_dfew(tmp_path, missing={"00007"})
    m = load_manifest("dfew")
    result = list_samples(tmp_path, m)
    assert len(result.samples) == 24 and [p.original_id for p in result.problems] == ["00007"]
    assert "frame folder missing" in result.problems[0].reason
    by_key = {s.key: s for s in result.samples}
    dfew_names = {1: "happy", 2: "sad", 3: "neutral", 4: "angry", 5: "surprise", 6: "disgust", 7: "fear"}
    for k in range(1, 6):
        for vid in ids[k]:
            if vid == "00007":
                continue
            s = by_key[vid]
            assert s.partition == f"set_{k}" and m.classes[s.label] == dfew_names[labels[vid]]
            assert s.kind == "frames" and s.source.name == vid


def test_dfew_inconsistent_official_folds_are_refused(tmp_path):
    make_dfew(tmp_path)
    train1 = tmp_path / "EmoLabel_DataSplit" / "train(single-labeled)" / "set_1.csv"
    train1.write_text(train1.read_text() + "1,1\n")  # a test clip of fold 1 also in its train list
    with pytest.raises(ManifestError, match="dfew fold set_1: official train list differs"):
        list_samples(tmp_path, load_manifest("dfew"))


def test_ferv39k(tmp_path):
    rows = {"train": ["Angry", "Happy", "Sad"], "test": ["Fear", "Neutral"]}
    split = tmp_path / "4_setups" / "All_scenes"
    split.mkdir(parents=True)
    for part, emotions in rows.items():
        lines = []
        for i, emo in enumerate(emotions):
            rel = f"Scene{i}/{emo}/{part}{i:04d}"
            touch_frames(tmp_path / "2_ClipsforFaceCrop" / rel)
            lines.append(f"{rel} {emo}")
        (split / f"{part}_All.csv").write_text("\n".join(lines) + "\n")
    m = load_manifest("ferv39k")
    result = list_samples(tmp_path, m)
    assert not result.problems
    got = {(s.partition, m.classes[s.label]) for s in result.samples}
    assert got == {("train", "angry"), ("train", "happy"), ("train", "sad"), ("test", "fear"), ("test", "neutral")}
    assert all("/" not in s.key and "." not in s.key for s in result.samples)


def make_mafw(root, broken_video=False):
    words = ["anger", "anxiety", "contempt", "disappointment", "disgust", "fear", "happiness", "helplessness", "neutral", "sadness", "surprise"]
    ids = {k: [f"{10 * k + j:05d}" for j in range(3)] for k in range(1, 6)}
    for k in range(1, 6):
        d = root / "split" / "single" / "no_caption" / f"set_{k}"
        d.mkdir(parents=True)
        (d / "test.txt").write_text("".join(f"{v}.mp4 {words[int(v) % 11]}\n" for v in ids[k]))
        (d / "train.txt").write_text("".join(f"{v}.mp4 {words[int(v) % 11]}\n" for f, vs in ids.items() if f != k for v in vs))
    clips = root / "data" / "clips"
    clips.mkdir(parents=True)
    for vs in ids.values():
        for v in vs:
            if v == "00020":
                touch_frames(root / "data" / "frames" / v)  # released as frames only
            elif not (broken_video and v == "00031"):
                (clips / f"{v}.mp4").write_bytes(b"mp4")
    return ids, words


def test_mafw_clips_or_frames_and_folds(tmp_path):
    ids, words = make_mafw(tmp_path, broken_video=True)
    m = load_manifest("mafw")
    result = list_samples(tmp_path, m)
    assert [p.original_id for p in result.problems] == ["00031"] and "video file missing" in result.problems[0].reason
    by_key = {s.key: s for s in result.samples}
    assert by_key["00020"].kind == "frames" and by_key["00021"].kind == "video"
    for k, vs in ids.items():
        for v in vs:
            if v != "00031":
                assert by_key[v].partition == f"set_{k}" and m.classes[by_key[v].label] == words[int(v) % 11]


def test_affectnet_7_and_8(tmp_path):
    lists = tmp_path / "Manually_Annotated_file_lists"
    lists.mkdir()
    header = "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal\n"
    rows = {"training": [(0, "1/a.jpg"), (7, "1/b.jpg"), (9, "2/c.jpg"), (6, "2/d.JPG")], "validation": [(1, "3/e.png"), (7, "3/f.jpg")]}
    for part, items in rows.items():
        lines = [f"{p},10,12,100,110,\"1;2;3\",{e},0.1,0.2" for e, p in items]
        (lists / f"{part}.csv").write_text(header + "\n".join(lines) + "\n")
        for _, p in items:
            (tmp_path / "Manually_Annotated_Images" / p).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / "Manually_Annotated_Images" / p).write_bytes(b"img")
    seven = list_samples(tmp_path, load_manifest("affectnet7"))
    assert {(s.partition, s.original_id, s.label) for s in seven.samples} == {
        ("training", "1/a.jpg", 0), ("training", "2/d.JPG", 6), ("validation", "3/e.png", 1)
    }
    assert seven.excluded == {"expression contempt": 2, "expression uncertain": 1}
    assert seven.samples[0].face_box == (10.0, 12.0, 100.0, 110.0) and seven.samples[0].key == "1_a"
    eight = list_samples(tmp_path, load_manifest("affectnet8"))
    assert len(eight.samples) == 5 and eight.excluded == {"expression uncertain": 1}


def test_voxceleb2(tmp_path):
    for spk, vid, n in [("id00012", "abc", 1), ("id00012", "abc", 2), ("id00099", "x-y", 7)]:
        p = tmp_path / "mp4" / spk / vid / f"{n:05d}.mp4"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"mp4")
    result = list_samples(tmp_path, load_manifest("voxceleb2"))
    assert [s.key for s in result.samples] == ["id00012_abc_00001", "id00012_abc_00002", "id00099_x-y_00007"]
    assert all(s.label == -1 and s.partition == "dev" for s in result.samples)


def own_manifest(tmp_path):
    return parse_manifest(
        {
            "name": "mine",
            "modality": "video",
            "classes": ["calm", "upset"],
            "layout": {"adapter": "csv", "options": {"csv": "mine.csv"}},
            "partitions": ["train", "test"],
            "folds": {"main": {"train": ["train"], "test": ["test"]}},
            "clip": {"frames": 16, "stride": 2},
        },
        tmp_path / "mine.json",
    )


def test_users_csv(tmp_path):
    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "a.webm").write_bytes(b"x")
    touch_frames(tmp_path / "frames" / "b")
    (tmp_path / "c.jpg").write_bytes(b"x")
    (tmp_path / "mine.csv").write_text("path,label,split\nv/a.webm,calm,train\nframes/b,upset,test\nc.jpg,calm,train\nv/gone.mp4,upset,test\n")
    result = list_samples(tmp_path, own_manifest(tmp_path))
    assert [(s.key, s.kind, s.label, s.partition) for s in result.samples] == [
        ("v_a", "video", 0, "train"), ("frames_b", "frames", 1, "test"), ("c", "image", 0, "train")
    ]
    assert result.problems[0].original_id == "v/gone.mp4"
    (tmp_path / "mine.csv").write_text("path,label,split\nv/a.webm,joy,train\n")
    with pytest.raises(ManifestError, match=r"mine.csv:2: label 'joy' is not a class"):
        list_samples(tmp_path, own_manifest(tmp_path))


def test_missing_split_file_and_raw_root(tmp_path):
    with pytest.raises(ManifestError, match="official split file missing"):
        list_samples(tmp_path, load_manifest("dfew"))
    with pytest.raises(ManifestError, match="is not a directory"):
        list_samples(tmp_path / "nowhere", load_manifest("dfew"))


def test_sanitise_key():
    assert sanitise_key("Scene1/Angry/0001.mp4") == "Scene1_Angry_0001_mp4"
    with pytest.raises(ValueError):
        sanitise_key("///")
