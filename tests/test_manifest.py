import copy
import json

import pytest

from preprocess.manifest import ManifestError, load_manifest, load_sfer, parse_manifest, resolve_data_root

CHECKED_IN = ["dfew", "ferv39k", "mafw", "affectnet7", "affectnet8", "voxceleb2"]


@pytest.mark.parametrize("name", CHECKED_IN)
def test_checked_in_manifests_are_valid(name):
    m = load_manifest(f"{name}.json")
    assert m.name == name and m.source.name == f"{name}.json"
    if m.modality == "video":
        assert m.clip.frames == 16 and m.clip.stride == (1 if name == "ferv39k" else 4)
    if name in ("dfew", "ferv39k", "mafw"):
        assert m.sfer.manifest == "affectnet7.json" and m.sfer.proportion == 0.5
        assert load_sfer(m).classes == ("neutral", "happiness", "sadness", "surprise", "fear", "disgust", "anger")


def test_class_orders_match_the_official_label_files():
    assert load_manifest("dfew").classes == ("happy", "sad", "neutral", "angry", "surprise", "disgust", "fear")
    assert load_manifest("ferv39k").classes == tuple(sorted(load_manifest("ferv39k").classes))
    mafw = load_manifest("mafw")
    assert len(mafw.classes) == 11 and mafw.classes == tuple(sorted(mafw.classes))
    assert load_manifest("affectnet8").classes[-1] == "contempt" and "contempt" not in load_manifest("affectnet7").classes
    assert mafw.class_index("helplessness") == 7
    with pytest.raises(ManifestError, match="unknown class 'joy'"):
        mafw.class_index("joy")


def test_released_datasets_frame_like_the_reference():
    for name in ("dfew", "ferv39k", "mafw", "affectnet7", "affectnet8"):
        assert load_manifest(name).preprocess.geometry == "squash", name  # the whole frame / box resized, no crop
    mafw = load_manifest("mafw").preprocess
    assert mafw.align and mafw.margin == 0.0  # the reference tool: the tight MTCNN box, levelled, squashed
    vox = load_manifest("voxceleb2")
    assert vox.preprocess.size == 224 and vox.clip.crop == (0, 32, 160, 160)  # stored whole, cropped at load time
    assert load_manifest("dfew").expected == {"set_1": 2341, "set_2": 2341, "set_3": 2340, "set_4": 2339, "set_5": 2336}
    assert load_manifest("ferv39k").expected == {"train": 31088, "test": 7847}
    assert parse_manifest({**_raw(), "preprocess": {}}).preprocess.geometry == "crop"  # manifests that do not say: as before


def test_five_folds_test_every_partition_once():
    for name in ("dfew", "mafw"):
        m = load_manifest(name)
        tests = [p for f in m.folds.values() for p in f.test]
        assert sorted(tests) == sorted(m.partitions)
        for fold in m.folds.values():
            assert set(fold.train) | set(fold.test) == set(m.partitions)


def _raw(name="dfew"):
    return json.loads(load_manifest(name).source.read_text())


def _mutated(edit):
    raw = copy.deepcopy(_raw())
    edit(raw)
    return raw


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda r: r.update(colour="red"), "unknown key.*colour"),
        (lambda r: r["preprocess"].update(codek="vp9"), "unknown key.*in preprocess: codek"),
        (lambda r: r.pop("classes"), "missing key.*classes"),
        (lambda r: r.update(classes=["happy", "happy"]), "classes"),
        (
            lambda r: r["folds"]["2"].update(train=["set_3", "set_4", "set_5"], test=["set_1", "set_2"]),
            "folds.2.test: partition 'set_1' is also the test set of fold '1'",
        ),
        (lambda r: r["folds"]["1"].update(train=["set_1", "set_2"]), r"folds\.1: train and test overlap"),
        (lambda r: r["folds"]["1"].update(test=["set_9"]), r"folds\.1\.test: unknown partition"),
        (lambda r: r["layout"].update(adapter="kinetics"), "layout.adapter: unknown adapter 'kinetics'"),
        (lambda r: r["preprocess"].update(codec="jpeg"), "preprocess.codec"),
        (lambda r: r.pop("clip"), "clip: video manifests need clip sampling"),
        (lambda r: r["clip"].update(stride=0), "clip: frames and stride must be positive"),
        (lambda r: r.update(expected={"set_7": 10}), "expected: counts for unknown partition"),
        (lambda r: r.update(modality="audio"), "modality"),
        (lambda r: r["preprocess"].update(geometry="stretch"), "preprocess.geometry: expected one of 'squash', 'crop'"),
        (lambda r: r["preprocess"].update(margin=-1.5), "preprocess.margin: must be a number above -1"),
    ],
)
def test_bad_manifests_name_the_field(edit, message, tmp_path):
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(_mutated(edit)))
    with pytest.raises(ManifestError, match=message) as err:
        load_manifest(path)
    assert str(path) in str(err.value)


def test_sfer_must_be_an_image_manifest(tmp_path):
    raw = _raw()
    raw["sfer"]["manifest"] = "ferv39k.json"
    m = parse_manifest(raw, tmp_path / "x.json")
    with pytest.raises(ManifestError, match="sfer.manifest 'ferv39k.json' is a video dataset"):
        load_sfer(m)


def test_bare_names_resolve_and_unknown_names_are_listed(monkeypatch, tmp_path):
    assert load_manifest("mafw").name == load_manifest("mafw.json").name == "mafw"
    with pytest.raises(ManifestError, match="manifest 'afew' not found.*dfew"):
        load_manifest("afew")
    bad = tmp_path / "bad.json"
    bad.write_text("{ not json")
    with pytest.raises(ManifestError, match="bad.json: not valid JSON"):
        load_manifest(bad)


def test_data_root_flag_env_default(monkeypatch, tmp_path):
    monkeypatch.delenv("S4D_DATA", raising=False)
    assert str(resolve_data_root()) == "data"
    monkeypatch.setenv("S4D_DATA", str(tmp_path))
    assert resolve_data_root() == tmp_path
    assert resolve_data_root("/x") == type(tmp_path)("/x")
    assert load_manifest("mafw").shard_dir() == tmp_path / "mafw"


def test_pretraining_mixture():
    from preprocess.mixture import load_mixture

    mix = load_mixture("pretrain")
    assert [(s.manifest, s.share, s.repeat) for s in mix.sources] == [("voxceleb2.json", 0.25, 4), ("affectnet8.json", 1.0, 1)]
    assert [m.name for m in mix.manifests()] == ["voxceleb2", "affectnet8"]
    with pytest.raises(ManifestError, match="is a pre-training mixture, not a dataset"):
        load_manifest("pretrain")
