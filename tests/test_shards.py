import io
import tarfile

import av
import numpy as np
import pytest

from preprocess.shards.encoding import encode_clip, encode_image, pack_info, unpack_info
from preprocess.shards.writer import ShardWriter

from .media_factory import moving_square


def test_shard_round_trip_and_dali_index(tmp_path):
    clip = encode_clip(moving_square(12), 25.0, "vp9", 30)
    with ShardWriter(tmp_path / "p-00000.tar") as w:
        w.write("a", {"webm": clip, "info": pack_info(3, 12, 25.0, 12), "json": b"{}"})
        w.write("b_1", {"webm": clip[:100], "info": pack_info(-1, 1, 29.97, 0)})
    assert w.written and w.count == 2
    with tarfile.open(tmp_path / "p-00000.tar") as tf:
        assert tf.getnames() == ["a.webm", "a.info", "a.json", "b_1.webm", "b_1.info"]
        assert tf.extractfile("a.webm").read() == clip
        assert unpack_info(tf.extractfile("b_1.info").read()) == {"label": -1, "frames": 1, "fps_milli": 29970, "faces_found": 0}
    wds2idx = pytest.importorskip("wds2idx", reason="DALI's wds2idx tool not installed")
    with wds2idx.IndexCreator(str(tmp_path / "p-00000.tar"), str(tmp_path / "ref.idx"), verbose=False) as ic:
        ic.create_index()
    assert (tmp_path / "p-00000.idx").read_text() == (tmp_path / "ref.idx").read_text()
    assert not list(tmp_path.glob("*.tmp"))


def test_webdataset_library_reads_our_shards(tmp_path):
    import webdataset as wds

    with ShardWriter(tmp_path / "s.tar") as w:
        for i in range(3):
            w.write(f"k{i}", {"jpg": encode_image(moving_square(1)[0]), "info": pack_info(i, 1, 0.0, 1)})
    samples = list(wds.WebDataset(str(tmp_path / "s.tar"), shardshuffle=False))
    assert [s["__key__"] for s in samples] == ["k0", "k1", "k2"]
    assert [unpack_info(s["info"])["label"] for s in samples] == [0, 1, 2]


def test_failed_or_empty_shard_leaves_no_file(tmp_path):
    with pytest.raises(RuntimeError):
        with ShardWriter(tmp_path / "x.tar") as w:
            w.write("a", {"jpg": b"1"})
            raise RuntimeError("killed")
    with ShardWriter(tmp_path / "y.tar") as w:
        pass
    assert not w.written and list(tmp_path.iterdir()) == []
    with ShardWriter(tmp_path / "z.tar") as w:
        with pytest.raises(ValueError, match="bad or repeated sample key"):
            w.write("a.b", {"jpg": b"1"})
        w.write("a", {"jpg": b"1"})
        with pytest.raises(ValueError, match="repeated"):
            w.write("a", {"jpg": b"1"})


@pytest.mark.parametrize("codec, quality, max_err", [("vp9", 30, 5.0), ("mjpeg", 4, 5.0)])
def test_clip_encoding_is_deterministic_and_faithful(codec, quality, max_err):
    frames = moving_square(20, 64, 64)
    data = encode_clip(frames, 30.0, codec, quality)
    assert data == encode_clip(frames, 30.0, codec, quality)  # resumed runs write identical shards
    with av.open(io.BytesIO(data)) as c:
        stream = c.streams.video[0]
        assert float(stream.average_rate) == pytest.approx(30.0)
        decoded = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(stream)])
    assert decoded.shape == frames.shape
    err = np.abs(decoded.astype(int) - frames).mean()
    assert err < max_err, err
