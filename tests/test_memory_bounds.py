"""Memory bounded by declared sizes: ``s4d shards`` refuses media whose header declares too many
pixels or frames before decoding, and streams frames instead of holding a whole video; the
loaders refuse a stored clip or image far beyond the manifest's preprocess size. Every case
makes its own tiny media."""

import dataclasses
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from pipelines import Loader, LoaderConfig, ShardError, open_dataset
from preprocess.faces import fit_frame
from preprocess.media import Limits, MediaError, iter_frame_folder, iter_video, read_image, read_video
from preprocess.run import run_shards
from preprocess.shards.folder import finalize

from .media_factory import moving_square, write_frames, write_image, write_video
from .test_bad_inputs import one_error_line, s4d
from .test_preprocess import csv_manifest


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header declares width x height, with a tiny (unusable) image payload: a
    decompression bomb's shape without its cost."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    raw = tmp_path_factory.mktemp("raw")
    write_video(raw / "big.webm", moving_square(6, 64, 64))
    write_video(raw / "small.webm", moving_square(6, 32, 32, seed=1))
    write_frames(raw / "folder", moving_square(5, 32, 32, seed=2))
    return raw


# ---------------------------------------------------------------- declared limits, API

BAD_MEDIA = [  # (what, limits, the line must contain)
    (
        "big.webm",
        Limits(max_pixels=64 * 64 - 1),
        "big.webm: declares 64x64 = 4096 pixels per frame, over the limit of 4095; if the file is genuine, raise it with --max-pixels",
    ),
    (
        "small.webm",
        Limits(max_frames=5),
        "small.webm: declares 6 frames, over the limit of 5 frames per sample; if the file is genuine, raise it with --max-frames",
    ),
    ("folder", Limits(max_frames=4), "folder: holds 5 frames, over the limit of 4 frames per sample"),
    ("folder", Limits(max_pixels=1000), "00001.jpg: declares 32x32 = 1024 pixels per frame, over the limit of 1000"),
]


@pytest.mark.parametrize("name,limits,message", BAD_MEDIA)
def test_declared_sizes_are_refused_before_decoding(media, name, limits, message):
    with pytest.raises(MediaError) as err:
        source = media / name
        _, frames = iter_video(source, limits) if source.suffix else iter_frame_folder(source, 25.0, limits)
        next(frames)  # the very first frame: nothing may have been decoded past the header
    assert message in str(err.value) and "\n" not in str(err.value)


def test_within_limits_decodes_unchanged(media):
    frames, fps = read_video(media / "big.webm", Limits(max_pixels=64 * 64, max_frames=6))
    assert frames.shape == (6, 64, 64, 3) and fps == 25.0
    assert np.array_equal(frames, read_video(media / "big.webm")[0])


IMAGE_BOMBS = [  # (declared width, height, the line must contain)
    (5000, 5000, "declares 5000x5000 = 25000000 pixels per frame, over the limit of 16777216"),
    (100_000, 100_000, "unreadable image (DecompressionBombError"),  # PIL's own refusal, still one per-file line
]


@pytest.mark.parametrize("w,h,message", IMAGE_BOMBS)
def test_image_header_declaring_a_bomb_is_a_media_error(tmp_path, w, h, message):
    path = _png_header_only(tmp_path / "bomb.png", w, h)
    with pytest.raises(MediaError) as err:
        read_image(path)
    assert str(err.value).startswith(str(path)) and message in str(err.value)


def test_bad_limit_in_the_environment_is_an_input_error(monkeypatch, tmp_path):
    monkeypatch.setenv("S4D_MAX_PIXELS", "lots")
    with pytest.raises(ValueError, match="S4D_MAX_PIXELS='lots': expected a positive whole number"):
        read_image(write_image(tmp_path / "a.png", moving_square(1, 8, 8)[0]))


# ---------------------------------------------------------------- streaming shards


def test_streamed_shards_store_the_same_frames_as_stacking(media, tmp_path):
    """No alignment: each frame is fitted as it is decoded; the stored clip equals fitting the
    fully decoded video (same encoder input, so the same bytes)."""
    from preprocess.shards.encoding import encode_clip

    raw = tmp_path / "raw"
    raw.mkdir()
    write_video(raw / "v.webm", moving_square(9, 48, 80, seed=3))
    (raw / "list.csv").write_text("path,label,split\nv.webm,calm,train\n")
    m = csv_manifest(tmp_path, size=32)
    run_shards(m, raw, tmp_path / "out")
    record = json.loads(next((tmp_path / "out").glob("*.record.json")).read_text())
    import tarfile

    with tarfile.open(tmp_path / "out" / record["file"]) as tf:
        stored = tf.extractfile("v.webm").read()
    frames, fps = read_video(raw / "v.webm")
    expected = encode_clip(np.stack([fit_frame(f, 32, m.preprocess.geometry) for f in frames]), fps, m.preprocess.codec, m.preprocess.quality)
    assert stored == expected


def test_streamed_alignment_matches_aligning_the_whole_video(fixtures_dir):
    """Detection over streamed frames (shrunk on arrival) and the second cropping pass give the
    faces and crops that detection and alignment over the stacked video give."""
    from preprocess.faces import FaceDetector, align_clip, align_span, plan_clip

    video = fixtures_dir / "single_face.mp4"
    det = FaceDetector("cpu")
    frames, _ = read_video(video)
    whole = align_clip(frames, det.detect(frames), 0.25, 64, 16)
    plan = plan_clip(det.detect_stream(iter_video(video)[1]), 16)
    assert plan.span == whole.span and (plan.faces_found, plan.faces_filled) == (whole.faces_found, whole.faces_filled)
    assert np.array_equal(align_span(iter_video(video)[1], plan, 0.25, 64), whole.frames)


# ---------------------------------------------------------------- the CLI


@pytest.mark.parametrize(
    "flag,value,message",
    [
        ("--max-pixels", 4000, "big.webm: declares 64x64 = 4096 pixels per frame, over the limit of 4000"),
        ("--max-frames", 5, "big.webm: declares 6 frames, over the limit of 5 frames per sample"),
    ],
)
def test_shards_reports_an_oversized_video_as_a_skipped_sample(media, tmp_path, flag, value, message):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "big.webm").write_bytes((media / "big.webm").read_bytes())
    (raw / "list.csv").write_text("path,label,split\nbig.webm,a,train\n")
    rc, out, err = s4d(
        "shards", "--csv", raw / "list.csv", "--no-align", "--size", 16, "--frames", 2, "--stride", 1, "--out", tmp_path / "out", "-j", 1, flag, value
    )
    assert rc == 2 and message in one_error_line(err), err
    problems = json.loads((tmp_path / "out" / "shards.json").read_text())["problems"]
    assert len(problems) == 1 and message in problems[0]["reason"]
    rc, out, err = s4d(
        "shards", "--csv", raw / "list.csv", "--no-align", "--size", 16, "--frames", 2, "--stride", 1, "--out", tmp_path / "again", "-j", 1
    )
    assert rc == 0, err  # the defaults take it


# ---------------------------------------------------------------- the loaders


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """Clip shards stored at 64 px, and image shards at 64 px."""
    tmp = tmp_path_factory.mktemp("stored")
    raw = tmp / "raw"
    raw.mkdir()
    rows = ["path,label,split"]
    for i in range(2):
        write_video(raw / f"v{i}.webm", moving_square(10, 64, 64, seed=i))
        write_image(raw / f"i{i}.png", moving_square(1, 64, 64, seed=i)[0])
        rows.append(f"v{i}.webm,{'ab'[i]},test")
    (raw / "list.csv").write_text("\n".join(rows) + "\n")
    (raw / "images.csv").write_text("path,label,split\n" + "".join(f"i{i}.png,{'ab'[i]},test\n" for i in range(2)))
    out = {}
    for kind, csv in (("video", "list.csv"), ("image", "images.csv")):
        spec = {
            "name": kind,
            "modality": kind,
            "classes": ["a", "b"],
            "layout": {"adapter": "csv", "options": {"csv": csv}},
            "preprocess": {"align": False, "size": 64, "codec": "vp9" if kind == "video" else "jpeg"},
            "partitions": ["train", "test"],
            "folds": {"main": {"train": ["train"], "test": ["test"]}},
        }
        if kind == "video":
            spec["clip"] = {"frames": 4, "stride": 1}
        from preprocess.manifest import parse_manifest

        m = parse_manifest(spec, tmp / f"{kind}.json")
        run_shards(m, raw, tmp / kind)
        finalize(m, tmp / kind)
        out[kind] = (m, tmp / kind)
    return out


@pytest.mark.parametrize("kind", ["video", "image"])
def test_loader_refuses_stored_media_far_beyond_the_preprocess_size(stored, kind):
    """Samples stored at 64 px read against a manifest saying 8 px (limit (4 x 8)^2 = 1024
    pixels): refused from the header, naming the shard and the key; at 64 px they decode."""
    m, folder = stored[kind]
    ds = open_dataset(m, folder, role="test")
    video = kind == "video"
    cfg = LoaderConfig(batch_size=2, train=False, size=16, **({"frames": 4, "stride": 1} if video else {"image_resize": 20}))
    assert len(list(Loader(ds, cfg, backend="torch").epoch(0))) == 1
    small = dataclasses.replace(m, preprocess=dataclasses.replace(m.preprocess, size=8))
    with pytest.raises(ShardError) as err:
        list(Loader(dataclasses.replace(ds, manifest=small), cfg, backend="torch").epoch(0))
    line = str(err.value)
    assert ".tar: sample " in line and "declares 64x64 pixels per frame, over the limit of 1024" in line and "\n" not in line
