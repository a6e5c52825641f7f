"""Each layout adapter on a small fake tree that copies the official layout and file formats."""

import pytest

from preprocess.adapters import list_samples, sanitise_key
from preprocess.manifest import ManifestError, load_manifest, parse_manifest


def touch_frames(folder, n=3):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(1, n + 1):
        (folder / f"{i:05d}.jpg").write_bytes(b"jpg")


DFEW_NAMES = ("happy", "sad", "neutral", "angry", "surprise", "disgust", "fear")  # official 1..7, authors' 0..6
MAFW_WORDS = ["anger", "anxiety", "contempt", "disappointment", "disgust", "fear", "happiness", "helplessness", "neutral", "sadness", "surprise"]
FERV_NAMES = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")


def make_dfew(
    root,
    missing=(),
    *,
    form="official",
    frames_dir="Clip/jpg_256",
    sizes=(5, 5, 5, 5, 5),
    authors_at="EmoLabel_DataSplit/{role}(single-labeled)/{role}_set_{k}.csv",
):
    """DFEW as shipped (``form="official"``: ``set_k.csv``, 1..7) or as the authors' scripts read it
    (``"authors"``: ``train_set_k.csv``/``test_set_k.csv``, 0..6). Returns fold ids and the
    official 1-based labels."""
    starts = [1 + sum(sizes[:k]) for k in range(5)]
    ids = {k: [f"{starts[k - 1] + j:05d}" for j in range(sizes[k - 1])] for k in range(1, 6)}
    labels = {vid: (int(vid) % 7) + 1 for vids in ids.values() for vid in vids}
    for k in range(1, 6):
        for role, members in (("test", ids[k]), ("train", [v for f, vs in ids.items() if f != k for v in vs])):
            if form == "official":
                path = root / "EmoLabel_DataSplit" / f"{role}(single-labeled)" / f"set_{k}.csv"
                rows = ["video_name,label"] + [f"{int(v)},{labels[v]}" for v in members]  # ids written unpadded
            else:
                path = root / authors_at.format(role=role, k=k)
                rows = ["video_name,label"] + [f"{v},{labels[v] - 1}" for v in members]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("\n".join(rows) + "\n")
    for vid in labels:
        if vid not in missing:
            touch_frames(root / frames_dir / vid, 1)
    return ids, labels


def make_ferv39k(root, form="official", rows=None):
    rows = rows or {"train": ["Angry", "Happy", "Sad", "Angry", "Surprise"], "test": ["Fear", "Neutral", "Disgust"]}
    for part, emotions in rows.items():
        lines = ["path,id"] if form == "authors" else []
        for i, emo in enumerate(emotions):
            rel = f"Scene{i % 2}/{emo}/{part}{i:04d}"
            touch_frames(root / "2_ClipsforFaceCrop" / rel, 1)
            lines.append(f"{rel},{FERV_NAMES.index(emo.lower())}" if form == "authors" else f"{rel} {emo}")
        path = root / ("Annotation" if form == "authors" else "4_setups/All_scenes") / (f"{part}.csv" if form == "authors" else f"{part}_All.csv")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n")
    return rows


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
    make_ferv39k(tmp_path, rows={"train": ["Angry", "Happy", "Sad"], "test": ["Fear", "Neutral"]})
    m = load_manifest("ferv39k")
    result = list_samples(tmp_path, m)
    assert not result.problems and result.layout == "official" and result.label_base == "names"
    got = {(s.partition, m.classes[s.label]) for s in result.samples}
    assert got == {("train", "angry"), ("train", "happy"), ("train", "sad"), ("test", "fear"), ("test", "neutral")}
    assert all("/" not in s.key and "." not in s.key for s in result.samples)


def make_mafw(root, broken_video=False, form="official"):
    """MAFW's official ``set_k/{train,test}.txt`` (label words) or the authors' ``anno/`` CSVs (0..10)."""
    words = MAFW_WORDS
    ids = {k: [f"{10 * k + j:05d}" for j in range(3)] for k in range(1, 6)}
    for k in range(1, 6):
        for role, members in (("test", ids[k]), ("train", [v for f, vs in ids.items() if f != k for v in vs])):
            if form == "official":
                d = root / "split" / "single" / "no_caption" / f"set_{k}"
                text = "".join(f"{v}.mp4 {words[int(v) % 11]}\n" for v in members)
                name = f"{role}.txt"
            else:
                d = root / "anno" / "single" / "no_caption" / f"set_{k}"
                text = "video_name,labels\n" + "".join(f"{v},{int(v) % 11}\n" for v in members)
                name = f"{role}.csv"
            d.mkdir(parents=True, exist_ok=True)
            (d / name).write_text(text)
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
        lines = [f'{p},10,12,100,110,"1;2;3",{e},0.1,0.2' for e, p in items]
        (lists / f"{part}.csv").write_text(header + "\n".join(lines) + "\n")
        for _, p in items:
            (tmp_path / "Manually_Annotated_Images" / p).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / "Manually_Annotated_Images" / p).write_bytes(b"img")
    seven = list_samples(tmp_path, load_manifest("affectnet7"))
    assert {(s.partition, s.original_id, s.label) for s in seven.samples} == {
        ("training", "1/a.jpg", 0),
        ("training", "2/d.JPG", 6),
        ("validation", "3/e.png", 1),
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
        ("v_a", "video", 0, "train"),
        ("frames_b", "frames", 1, "test"),
        ("c", "image", 0, "train"),
    ]
    assert result.problems[0].original_id == "v/gone.mp4"
    (tmp_path / "mine.csv").write_text("path,label,split\nv/a.webm,joy,train\n")
    with pytest.raises(ManifestError, match=r"mine.csv:2: label 'joy' is not a class"):
        list_samples(tmp_path, own_manifest(tmp_path))


def test_missing_split_file_and_raw_root(tmp_path):
    with pytest.raises(ManifestError, match="dfew: no split files found"):
        list_samples(tmp_path, load_manifest("dfew"))
    with pytest.raises(ManifestError, match="is not a directory"):
        list_samples(tmp_path / "nowhere", load_manifest("dfew"))


def test_sanitise_key():
    assert sanitise_key("Scene1/Angry/0001.mp4") == "Scene1_Angry_0001_mp4"
    with pytest.raises(ValueError):
        sanitise_key("///")


# ----------------------------------------------------------------------------- releases as shipped, and the dry run

import json  # noqa: E402

from typer.testing import CliRunner  # noqa: E402

from s4d.cli import app  # noqa: E402


def dry_run_json(raw, manifest, *extra):
    """`s4d shards --dry-run --json` through the real command line; stdout must be one JSON object."""
    out = raw.parent / f"{raw.name}-shards"
    res = CliRunner().invoke(app, ["shards", "--manifest", str(manifest), "--raw", str(raw), "--dry-run", "--json", "--out", str(out), *extra])
    assert not out.exists()  # a dry run writes nothing
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def expected_dfew(ids, labels):
    parts = {f"set_{k}": len(v) for k, v in ids.items()}
    classes = {c: sum(DFEW_NAMES[lab - 1] == c for lab in labels.values()) for c in DFEW_NAMES}
    return parts, classes


def _dfew_official(root):
    return (*expected_dfew(*make_dfew(root, sizes=(6, 5, 5, 4, 3))), "official", 1)


def _dfew_authors(root):
    return (*expected_dfew(*make_dfew(root, form="authors", frames_dir="clip_jpg_256", sizes=(3, 4, 5, 6, 7))), "authors", 0)


def _mafw(form):
    def build(root):
        ids, words = make_mafw(root, form=form)
        parts = {f"set_{k}": len(v) for k, v in ids.items()}
        classes = {w: sum(int(v) % 11 == i for vs in ids.values() for v in vs) for i, w in enumerate(words)}
        return parts, classes, form, 0 if form == "authors" else "names"

    return build


def _ferv(form):
    def build(root):
        rows = make_ferv39k(root, form)
        classes = {c: sum(e.lower() == c for es in rows.values() for e in es) for c in FERV_NAMES}
        return {p: len(es) for p, es in rows.items()}, classes, form, 0 if form == "authors" else "names"

    return build


@pytest.mark.parametrize(
    "manifest, build",
    [
        ("dfew", _dfew_official),
        ("dfew", _dfew_authors),
        ("mafw", _mafw("official")),
        ("mafw", _mafw("authors")),
        ("ferv39k", _ferv("official")),
        ("ferv39k", _ferv("authors")),
    ],
    ids=["dfew-official", "dfew-authors", "mafw-official", "mafw-authors", "ferv39k-official", "ferv39k-authors"],
)
def test_dry_run_counts_every_release_form_exactly(tmp_path, manifest, build):
    partitions, classes, form, base = build(tmp_path)
    report = dry_run_json(tmp_path, manifest)
    assert report["layout"] == form and report["label_base"] == base
    assert report["partitions"] == partitions and report["samples"] == sum(partitions.values())
    assert report["classes"] == classes
    assert report["problems"] == [] and report["excluded"] == {}
    for name, fold in load_manifest(manifest).folds.items():
        assert report["folds"][name]["test"] == sum(partitions[p] for p in fold.test)
        assert report["folds"][name]["train"] == sum(partitions[p] for p in fold.train)
    assert not any(tmp_path.glob("**/plan.json"))


def test_dry_run_reports_the_official_dfew_fold_sizes(tmp_path):
    sizes = (2341, 2341, 2340, 2339, 2336)
    ids, labels = make_dfew(tmp_path, frames_dir="Clip/clip_224x224", sizes=sizes)
    report = dry_run_json(tmp_path, "dfew")
    assert report["samples"] == 11697 and list(report["partitions"].values()) == list(sizes)
    assert report["paths"]["frames"] == "Clip/clip_224x224" and report["expected_mismatch"] == {}
    assert sum(report["classes"].values()) == 11697 and report["problems"] == []


def test_dry_run_lists_missing_media_and_every_bad_row_a_real_run_refuses(tmp_path):
    make_dfew(tmp_path, missing={"00003"})
    test1 = tmp_path / "EmoLabel_DataSplit" / "test(single-labeled)" / "set_1.csv"
    test1.write_text(test1.read_text() + "abc,1\n9,9\n10,4\n")  # 00010 is also in set_2
    report = dry_run_json(tmp_path, "dfew")
    reasons = [p["reason"] for p in report["problems"]]
    assert any("set_1.csv:7: clip id 'abc' is not a number" in r for r in reasons)
    assert any("set_1.csv:8: label 9 is not 1..7" in r for r in reasons)
    assert [p["id"] for p in report["problems"] if p["kind"] == "media"] == ["00003"]
    assert any("fold set_2: official train list differs" in r for r in reasons)
    assert any("in more than one official test set: ['00010']" in r for r in reasons)
    with pytest.raises(ManifestError, match=r"set_1.csv:7: clip id 'abc' is not a number \(and 4 more problem"):
        list_samples(tmp_path, load_manifest("dfew"))
    res = CliRunner().invoke(app, ["shards", "--manifest", "dfew", "--raw", str(tmp_path), "--dry-run"])
    assert res.exit_code == 0 and "6 problem(s)" in res.stdout and "set_1" in res.stdout and "official" in res.stdout


def test_no_release_found_is_one_line_listing_every_place_searched(tmp_path):
    res = CliRunner().invoke(app, ["shards", "--manifest", "dfew", "--raw", str(tmp_path), "--dry-run", "--json"])
    assert res.exit_code == 2 and res.stdout == "" and "Traceback" not in res.output
    message = " ".join(res.output.split())  # rich may wrap the one line on a narrow terminal
    for place in (
        "EmoLabel_DataSplit/{train,test}(single-labeled)/set_{1..5}.csv",
        "EmoLabel_DataSplit/{train,test}(single-labeled)/{train,test}_set_{1..5}.csv",
        "EmoLabel_DataSplit/{train,test}_set_{1..5}.csv",
        "authors: {train,test}_set_{1..5}.csv",
    ):
        assert place in message
    with pytest.raises(ManifestError) as err:
        list_samples(tmp_path, load_manifest("mafw"))
    assert "split/single/no_caption/set_{1..5}/{train,test}.txt" in str(err.value) and "anno/single/no_caption" in str(err.value)
    assert "\n" not in str(err.value)
    make_dfew(tmp_path, frames_dir="somewhere/else")  # splits present, frames not where DFEW ships them
    with pytest.raises(ManifestError, match="dfew: no frame folder .* searched Clip/clip_224x224, Clip/jpg_256, clip_jpg_256, Clip/clip_224x224_16f"):
        list_samples(tmp_path, load_manifest("dfew"))


def dfew_with(options, tmp_path):
    raw = json.loads(load_manifest("dfew").source.read_text())
    raw["layout"]["options"].update(options)
    return parse_manifest(raw, tmp_path / "dfew.json")


def test_label_base_is_detected_reported_or_asked_for(tmp_path):
    root = tmp_path / "raw"
    make_dfew(root, form="authors", authors_at="{role}_set_{k}.csv")  # at the raw root, 0..6
    result = list_samples(root, load_manifest("dfew"))
    assert result.layout == "authors" and result.label_base == 0 and result.paths["splits"] == "{role}_set_{k}.csv"
    assert {s.key: load_manifest("dfew").classes[s.label] for s in result.samples}["00007"] == DFEW_NAMES[7 % 7]
    for f in root.glob("*_set_*.csv"):  # drop every 0 (happy): 1..6 alone could be either base
        f.write_text("\n".join(ln for ln in f.read_text().splitlines() if not ln.endswith(",0")) + "\n")
    with pytest.raises(ManifestError, match=r"numeric labels 1\.\.6 could be 0-based or 1-based .* set layout.options.label_base"):
        list_samples(root, load_manifest("dfew"))
    pinned = list_samples(root, dfew_with({"label_base": 0}, tmp_path))
    assert pinned.label_base == 0 and all(DFEW_NAMES.index(load_manifest("dfew").classes[s.label]) == int(s.key) % 7 for s in pinned.samples)
    f = root / "test_set_1.csv"
    f.write_text(f.read_text() + "00001,0\n00002,7\n")
    with pytest.raises(ManifestError, match=r"labels span 0\.\.7, more values than the 7 classes"):
        list_samples(root, load_manifest("dfew"))
    with pytest.raises(ManifestError, match="label_base must be auto, 0 or 1"):
        list_samples(root, dfew_with({"label_base": 2}, tmp_path))


def test_official_form_wins_unless_the_manifest_pins_one(tmp_path):
    make_dfew(tmp_path, frames_dir="Clip/clip_224x224")
    make_dfew(tmp_path, form="authors", frames_dir="Clip/clip_224x224_16f")  # authors' copies beside the official files
    auto = list_samples(tmp_path, load_manifest("dfew"))
    assert (auto.layout, auto.label_base, auto.paths["frames"]) == ("official", 1, "Clip/clip_224x224")
    pinned = list_samples(tmp_path, dfew_with({"form": "authors", "frames_dir": "Clip/clip_224x224_16f"}, tmp_path))
    assert (pinned.layout, pinned.label_base, pinned.paths["frames"]) == ("authors", 0, "Clip/clip_224x224_16f")
    assert [(s.key, s.label, s.partition) for s in pinned.samples] == [(s.key, s.label, s.partition) for s in auto.samples]
    with pytest.raises(ManifestError, match="layout.options.form must be auto or one of official, authors"):
        list_samples(tmp_path, dfew_with({"form": "converted"}, tmp_path))


def test_authors_mafw_and_ferv39k_give_the_same_samples_as_the_official_files(tmp_path):
    make_mafw(tmp_path / "official")
    make_mafw(tmp_path / "authors", form="authors")
    make_ferv39k(tmp_path / "fo")
    make_ferv39k(tmp_path / "fa", form="authors")
    for name, a, b in (("mafw", "official", "authors"), ("ferv39k", "fo", "fa")):
        left, right = (list_samples(tmp_path / d, load_manifest(name)) for d in (a, b))
        assert [(s.key, s.label, s.partition, s.kind) for s in left.samples] == [(s.key, s.label, s.partition, s.kind) for s in right.samples]
        assert (left.layout, right.layout, right.label_base) == ("official", "authors", 0)
