"""Nothing is written outside the folder the user named: every name that becomes a path (a
CSV fold or split value, a manifest partition or fold key, a shard name read back from a plan)
meets one safe-name rule where it is read, refused in one line naming the field and the file;
and ``--part auto`` refuses a SLURM array index outside its part count."""

import json

import pytest

from preprocess.manifest import ManifestError, check_name, is_safe_name

from .media_factory import moving_square, write_video
from .test_bad_inputs import GOOD, one_error_line, s4d


@pytest.mark.parametrize("name", ["../evil", "../../x", "/abs/x", "a/b", "..", ".hidden", "x..y", "", "a" * 129, "a b", 7, None])
def test_unsafe_names_are_refused(name):
    assert not is_safe_name(name)
    with pytest.raises(ManifestError, match=r"^where: field: must be a plain folder name"):
        check_name(name, "field", "where")


@pytest.mark.parametrize("name", ["train", "set_1", "1", "fold-2.b", "a" * 128])
def test_safe_names_pass(name):
    assert check_name(name, "field", "where") == name


@pytest.fixture()
def tree(tmp_path):
    """tmp/raw (two videos), tmp/work (where outputs go), tmp/elsewhere (must stay empty)."""
    raw = tmp_path / "raw"
    raw.mkdir()
    for i in range(2):
        write_video(raw / f"v{i}.webm", moving_square(6, 32, 32, seed=i))
    (tmp_path / "work").mkdir()
    (tmp_path / "elsewhere").mkdir()
    return tmp_path


def _nothing_outside(tree):
    assert list((tree / "elsewhere").iterdir()) == []
    assert [p.name for p in tree.iterdir()] and set(p.name for p in tree.iterdir()) <= {"raw", "work", "elsewhere", "m.json"}
    assert [p for p in tree.rglob("x-*")] == [] and [p for p in tree.rglob("*evil*")] == []


def test_a_csv_fold_with_dot_dot_is_one_line_and_writes_nothing(tree):
    csv = tree / "raw" / "list.csv"
    csv.write_text("path,label,fold\nv0.webm,a,1\nv1.webm,b,../../x\n")
    rc, _, err = s4d("shards", "--csv", csv, "--no-align", "--size", "32", "--frames", "4", "--stride", "1", "--data-root", tree / "work" / "data")
    line = one_error_line(err)
    assert rc == 2 and "list.csv:3: fold: must be a plain folder name" in line and "'../../x'" in line, line
    _nothing_outside(tree)
    assert not (tree / "work" / "data").exists()


def test_a_manifest_partition_that_is_absolute_is_one_line_and_writes_nothing(tree):
    (tree / "raw" / "list.csv").write_text("path,label,split\nv0.webm,a,train\nv1.webm,b,/abs/x\n")
    spec = {**GOOD, "partitions": ["train", "test", str(tree / "elsewhere" / "x")]}
    (tree / "m.json").write_text(json.dumps(spec))
    rc, _, err = s4d("shards", "--manifest", tree / "m.json", "--raw", tree / "raw", "--data-root", tree / "work" / "data")
    line = one_error_line(err)
    assert rc == 2 and "m.json: partitions: must be a plain folder name" in line, line
    _nothing_outside(tree)
    assert not (tree / "work" / "data").exists()


def test_a_manifest_fold_key_with_dot_dot_stops_cv_before_anything_is_written(tree):
    folds = {"main": {"train": ["train"], "test": ["test"]}, "../../elsewhere/evil": {"train": ["test"], "test": ["train"]}}
    spec = {**GOOD, "folds": folds}
    (tree / "m.json").write_text(json.dumps(spec))
    rc, _, err = s4d(
        "cv",
        "--manifest",
        tree / "m.json",
        "--size",
        "debug",
        "--epochs",
        "1",
        "--backend",
        "torch",
        "--data-root",
        tree / "work" / "data",
        "--out",
        tree / "work" / "runs" / "cv",
    )
    line = one_error_line(err)
    assert rc == 2 and "m.json: folds: must be a plain folder name" in line and "evil" in line, line
    _nothing_outside(tree)
    assert list((tree / "work").iterdir()) == []


def test_shard_names_read_back_from_a_plan_are_checked(tmp_path):
    from preprocess.manifest import parse_manifest
    from preprocess.shards.folder import finalize

    m = parse_manifest(json.loads(json.dumps(GOOD)), tmp_path / "tiny.json")
    out = tmp_path / "data" / "tiny"
    out.mkdir(parents=True)
    (out / "plan.json").write_text(json.dumps({"manifest": "tiny", "classes": ["a", "b"], "shards": {"../../evil-00000": []}}))
    with pytest.raises(ManifestError, match="plan.json: shards: must be a plain folder name"):
        finalize(m, out)


@pytest.mark.parametrize(
    "env,part",
    [
        ({"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "1"}, (2, 4)),
        (
            {
                "SLURM_ARRAY_TASK_ID": "20",
                "SLURM_ARRAY_TASK_COUNT": "4",
                "SLURM_ARRAY_TASK_MIN": "0",  # --array=0-30:10
                "SLURM_ARRAY_TASK_MAX": "30",
                "SLURM_ARRAY_TASK_STEP": "10",
            },
            (2, 4),
        ),
    ],
)
def test_part_auto_maps_contiguous_and_stepped_arrays(env, part):
    from preprocess.run import parse_part

    assert parse_part("auto", env) == part


@pytest.mark.parametrize(
    "env,index,count",
    [
        ({"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_COUNT": "3"}, 4, 3),  # SLURM_ARRAY_TASK_MIN unset
        (
            {
                "SLURM_ARRAY_TASK_ID": "5",
                "SLURM_ARRAY_TASK_COUNT": "3",
                "SLURM_ARRAY_TASK_MIN": "1",  # --array=1,5,9
                "SLURM_ARRAY_TASK_MAX": "9",
            },
            4,
            3,
        ),
        ({"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "0"}, 0, 0),
    ],
)
def test_part_auto_refuses_an_index_outside_the_part_count(env, index, count):
    from preprocess.run import parse_part

    with pytest.raises(ValueError, match=rf"index {index} .* outside the part count {count} "):
        parse_part("auto", env)


def test_part_auto_outside_the_array_is_one_line_through_the_cli(tmp_path):
    csv = tmp_path / "list.csv"
    write_video(tmp_path / "v0.webm", moving_square(6, 32, 32, seed=0))
    csv.write_text("path,label,split\nv0.webm,a,train\n")
    rc, _, err = s4d(
        "shards",
        "--csv",
        csv,
        "--no-align",
        "--workers",
        "1",
        "--part",
        "auto",
        "--out",
        tmp_path / "out",
        env={"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_COUNT": "3", "SLURM_ARRAY_TASK_MIN": "0"},
    )
    line = one_error_line(err)
    assert rc == 2 and "index 4" in line and "part count 3" in line, line
    assert not (tmp_path / "out").exists()
