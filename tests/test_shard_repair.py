"""Shard sets repair themselves on a re-run and carry a format version (issue 23, round 3).

Every case copies one tiny real shard set (4 clips, 2 shards, made by the real CLI), breaks it
and runs the real code on it: ``s4d shards`` again, ``open_dataset`` (what training and eval
open), or the CLI."""

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from preprocess.errors import InputError
from preprocess.manifest import ManifestError, load_manifest
from preprocess.shards.reader import ShardError
from preprocess.shards.verify import verify_shards
from preprocess.shards.version import FORMAT_VERSION, INDEX_META_KEY

from .test_bad_inputs import one_error_line, raw, s4d  # noqa: F401  (raw: the same tiny raw videos, a fixture)

SHARDS_ARGS = ("--no-align", "--size", "32", "--frames", "4", "--stride", "1", "-j", "1")


@pytest.fixture(scope="module")
def pristine(raw, tmp_path_factory):
    out = tmp_path_factory.mktemp("pristine") / "data"
    rc, _, err = s4d("shards", "--csv", raw / "list.csv", *SHARDS_ARGS, "--out", out)
    assert rc == 0, err
    return out


@pytest.fixture
def shards(pristine, tmp_path):
    return Path(shutil.copytree(pristine, tmp_path / "data"))


def manifest(folder):
    return load_manifest(str(folder / "manifest.json"))


def rerun(raw, folder, part=(0, 1)):
    """``s4d shards`` again through the API (what the CLI calls, in-process: fast): the repair
    lines, then the merge."""
    from preprocess.run import run_shards
    from preprocess.shards.folder import finalize

    said = []
    m = manifest(folder)
    summary = run_shards(m, raw, folder, part=part, on_repair=said.append)
    assert summary.repaired == said
    listed_before_merge = json.loads((folder / "shards.json").read_text()) if (folder / "shards.json").is_file() else None
    finalize(m, folder)
    return said, listed_before_merge


def shard_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.suffix in (".tar", ".idx", ".parquet") or p.name.endswith(".record.json"))


def same_files(a: Path, b: Path) -> list[str]:
    """Names whose bytes differ between two shard folders (shard files, records, the index);
    both must hold the same names."""
    names = shard_files(a)
    assert names == shard_files(b)
    return [n for n in names if (a / n).read_bytes() != (b / n).read_bytes()]


def _flip_a_byte(folder):
    tar = folder / "train-00000.tar"
    data = bytearray(tar.read_bytes())
    data[len(data) // 2] ^= 0xFF
    tar.write_bytes(bytes(data))


DAMAGE = [  # (break it, the repair line must say)
    (lambda f: (f / "train-00000.tar").unlink(), "train-00000.tar: encoding the shard again from the raw data (train-00000.tar: missing)"),
    (
        lambda f: (f / "train-00000.tar").write_bytes((f / "train-00000.tar").read_bytes()[:-1024]),
        "train-00000.tar: encoding the shard again from the raw data (train-00000.tar: ",
    ),
    (_flip_a_byte, "train-00000.tar: encoding the shard again from the raw data (train-00000.tar: sha256 differs from its record"),
    (lambda f: (f / "train-00000.record.json").write_text("{not json"), "(train-00000.record.json: not valid JSON"),
    (lambda f: (f / "train-00000.record.json").write_text("[]"), "(train-00000.record.json: not a shard record)"),
    (lambda f: (f / "train-00000.idx").unlink(), "train-00000.idx: rebuilt from train-00000.tar (train-00000.idx is missing)"),
    (
        lambda f: (f / "train-00000.idx").write_bytes(b"\x00\xffgarbage"),
        "train-00000.idx: rebuilt from train-00000.tar (train-00000.idx does not match train-00000.tar)",
    ),
]


@pytest.mark.parametrize(
    "damage,said", DAMAGE, ids=["tar-deleted", "tar-truncated", "tar-flipped", "record-garbage", "record-not-object", "idx-deleted", "idx-garbage"]
)
def test_a_rerun_repairs_a_damaged_shard_byte_for_byte(raw, pristine, shards, damage, said):
    damage(shards)
    lines, _ = rerun(raw, shards)
    assert len(lines) == 1 and said in lines[0], lines
    assert same_files(pristine, shards) == []  # rebuilt exactly: encoding is deterministic
    verify_shards(manifest(shards), shards, checksums=True)
    again, _ = rerun(raw, shards)
    assert again == []  # nothing left to repair


def test_a_rerun_of_an_intact_folder_repairs_nothing(raw, pristine, shards):
    lines, _ = rerun(raw, shards)
    assert lines == [] and same_files(pristine, shards) == []


def test_shards_json_never_lists_a_tar_that_is_gone(raw, shards):
    from preprocess.run import run_shards
    from preprocess.shards.folder import finalize

    (shards / "test-00000.tar").unlink()
    m = manifest(shards)
    said = run_shards(m, raw, shards, part=(1, 2), on_repair=None).repaired  # the part without the damaged shard
    assert said == [
        f"{shards / 'shards.json'}: removed with index.parquet (lists test-00000.tar, which is missing); re-run the "
        "part that holds it, then the merge rewrites both"
    ]
    assert not (shards / "shards.json").exists() and not (shards / "index.parquet").exists()
    said = run_shards(m, raw, shards, part=(0, 2), on_repair=None).repaired  # this part repairs it
    assert len(said) == 1 and "test-00000.tar: encoding the shard again" in said[0]
    assert finalize(m, shards)["counts"] == {"test": 1, "train": 3}
    verify_shards(m, shards, checksums=True)


def test_the_cli_rerun_says_what_it_rebuilt_and_why(raw, shards):
    (shards / "train-00000.tar").unlink()
    rc, out, err = s4d("shards", "--csv", raw / "list.csv", *SHARDS_ARGS, "--out", shards)
    assert rc == 0, err
    assert f"{shards / 'train-00000.tar'}: encoding the shard again from the raw data (train-00000.tar: missing)" in out + err
    assert "1 shard(s) written now" in out
    rc, out, err = s4d("inspect", shards, "--verify")
    assert rc == 0 and "verified" in out, err


def test_merge_only_refuses_a_record_whose_tar_is_gone(shards):
    from preprocess.shards.folder import finalize

    (shards / "train-00000.tar").unlink()
    with pytest.raises(ManifestError) as err:
        finalize(manifest(shards), shards)
    assert str(err.value) == f"{shards / 'train-00000.tar'}: missing; re-run `s4d shards` (without --merge-only) to rebuild it"


# -- item 2: training opens a shard set with cheap checks, labels included ----------------------------------------------------


def _edit_index(folder, edit):
    import pyarrow as pa

    table = pq.read_table(folder / "index.parquet")
    rows = table.to_pylist()
    edit(rows)
    pq.write_table(pa.Table.from_pylist(rows).replace_schema_metadata(table.schema.metadata), folder / "index.parquet")


def _swap_train_labels(rows):
    train = [r for r in rows if r["partition"] == "train"]
    train[0]["label"], train[1]["label"] = train[1]["label"], train[0]["label"]


def test_labels_swapped_in_the_index_stop_open_dataset_naming_index_and_shard(shards):
    from pipelines.dataset import open_dataset

    _edit_index(shards, _swap_train_labels)
    with pytest.raises(ManifestError) as err:
        open_dataset(manifest(shards), shards, role="train")
    line = str(err.value)
    assert line.startswith(f"{shards / 'index.parquet'}: sample v0: label 1, 6 frames, but its own record in train-00000.tar says label 0, 6 frames")
    open_dataset(manifest(shards), shards, role="test")  # the other shard is fine


def test_labels_swapped_in_the_index_stop_training_in_one_line(shards, tmp_path):
    _edit_index(shards, _swap_train_labels)
    rc, _, err = s4d(
        "train", "--manifest", shards / "manifest.json", "--size", "debug", "--epochs", "1", "--out", tmp_path / "run", "--backend", "torch"
    )
    line = one_error_line(err)
    assert rc == 2 and "index.parquet: sample v0" in line and "train-00000.tar" in line and "--merge-only" in line, line
    assert not (tmp_path / "run" / "config.json").exists()


def test_a_garbage_record_in_a_tar_is_blamed_on_the_tar_at_open(shards):
    from pipelines.dataset import open_dataset
    from preprocess.shards.encoding import pack_info
    from preprocess.shards.reader import read_index

    tar = shards / "train-00000.tar"
    offset, size = read_index(tar.with_suffix(".idx"), tar.stat().st_size)["v0"]["info"]
    data = bytearray(tar.read_bytes())
    data[offset : offset + size] = pack_info(90, 0, 25.0, 0)  # same size: only a read of the record sees it
    tar.write_bytes(bytes(data))
    with pytest.raises(ShardError) as err:
        open_dataset(manifest(shards), shards, role="train")
    assert str(err.value) == (
        f"{tar}: sample v0: its .info record is garbage (label 90, 0 frames): the tar is corrupt; re-run `s4d shards` to rebuild it"
    )


def test_the_open_check_reads_at_most_three_records_per_shard():
    """The spot check reads the first, middle and last .info record of a shard (all of a small one)."""
    from preprocess.shards.verify import spot_positions

    assert spot_positions(2) == [0, 1] and spot_positions(1000) == [0, 500, 999] and spot_positions(0) == []


# -- item 3: versioned formats -------------------------------------------------------------------------------------------------


def test_new_shard_sets_carry_the_format_version_and_old_ones_still_read(shards):
    from pipelines.dataset import open_dataset

    assert json.loads((shards / "shards.json").read_text())["format_version"] == FORMAT_VERSION == 1
    assert pq.read_schema(shards / "index.parquet").metadata[INDEX_META_KEY] == b"1"
    summary = json.loads((shards / "shards.json").read_text())
    del summary["format_version"]  # a set written before versions existed
    (shards / "shards.json").write_text(json.dumps(summary))
    pq.write_table(pq.read_table(shards / "index.parquet").replace_schema_metadata(None), shards / "index.parquet")
    assert len(open_dataset(manifest(shards), shards, role="train")) == 3


def _summary_version(value):
    def edit(folder):
        summary = json.loads((folder / "shards.json").read_text())
        summary["format_version"] = value
        (folder / "shards.json").write_text(json.dumps(summary))

    return edit


def _index_version(value: bytes):
    def edit(folder):
        table = pq.read_table(folder / "index.parquet")
        pq.write_table(table.replace_schema_metadata({INDEX_META_KEY: value}), folder / "index.parquet")

    return edit


UPGRADE = "upgrade s4d"
REBUILD = "re-run `s4d shards` to rebuild"
VERSION_CASES = [  # (set the version, the file named, the exact line's text)
    (_summary_version(2), "shards.json", "shard format version 2 is newer than this s4d reads (1); " + UPGRADE),
    (_summary_version(0), "shards.json", "shard format version 0 is not one this s4d reads (1); " + REBUILD),
    (_summary_version("one"), "shards.json", "shard format version 'one' is not one this s4d reads (1); " + REBUILD),
    (_index_version(b"7"), "index.parquet", "shard format version 7 is newer than this s4d reads (1); " + UPGRADE),
    (_index_version(b"0"), "index.parquet", "shard format version 0 is not one this s4d reads (1); " + REBUILD),
]


@pytest.mark.parametrize("edit,file,text", VERSION_CASES, ids=["summary-newer", "summary-older", "summary-garbage", "index-newer", "index-older"])
def test_a_format_version_this_s4d_cannot_read_is_one_line(shards, edit, file, text):
    from pipelines.dataset import open_dataset

    edit(shards)
    with pytest.raises(InputError) as err:
        open_dataset(manifest(shards), shards, role="train")
    assert str(err.value) == f"{shards / file}: {text}"
    rc, _, stderr = s4d("inspect", shards)
    assert rc == 2 and one_error_line(stderr) == f"error: {shards / file}: {text}"


# -- item 4: a garbage .idx names itself ---------------------------------------------------------------------------------------


IDX_CASES = [  # (the .idx text, what the line says after naming the .idx)
    (b"\x00\xff\xfe garbage", ": DALI index is not text (garbage); "),
    (b"v1.2 1\nwebm zero 12 v0.webm\n", ":2: malformed index line; "),
    (b"v1.2 1\nwebm 512 99999999 v0.webm\n", ":2: sample v0.webm ends at byte 100000511 but train-00000.tar has "),
    (b"hello\n", ": not a v1.2 DALI index; "),
]


@pytest.mark.parametrize("text,said", IDX_CASES, ids=["binary", "not-a-number", "past-the-tar", "no-header"])
def test_a_garbage_idx_is_named_and_says_how_to_rebuild(shards, text, said):
    from pipelines.dataset import open_dataset

    (shards / "train-00000.idx").write_bytes(text)
    with pytest.raises(ShardError) as err:
        open_dataset(manifest(shards), shards, role="train")
    line = str(err.value)
    assert line.startswith(f"{shards / 'train-00000.idx'}{said}") and line.endswith("delete it and re-run `s4d shards` to rebuild it from its tar"), (
        line
    )
