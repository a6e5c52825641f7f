"""``s4d predict``: face following, windows, real videos and images, foreign checkpoints, errors."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from pipelines import Augment, LoaderConfig
from pipelines.torch_fallback import TorchTransforms
from preprocess.faces import Face
from preprocess.media import read_image, read_video
from s4d import build_model, save_checkpoint
from s4d.checkpoint import CheckpointError, to_reference
from s4d.demo.faces import make_clip
from s4d.infer import PredictConfig, Predictor, write_output
from s4d.infer.faces import to_tensor
from s4d.infer.tracking import main_face
from s4d.infer.windows import plan_windows, window_starts
from s4d.models import Classifier
from s4d.models.config import EncoderConfig, ModelConfig, MoEConfig
from s4d.plots import plot_timeline
from tests.media_factory import write_video

NAMES = ("calm", "joy", "shock")


def face(x: float, side: float, prob: float = 0.99) -> Face:
    return Face((x, 10.0, x + side, 10.0 + side), prob, np.zeros((5, 2)))


def debug_checkpoint(tmp_path, *, align: bool = False, stride: int = 4, fps: float | None = None):
    """A debug-size model with names, saved as training saves it (``align`` is what its training
    data had; ``predict`` aligns raw input unless told ``--no-align``)."""
    model = build_model("s4d", "debug", video_classes=3, image_classes=3)
    model.config = dataclasses.replace(model.config, class_names={"video": NAMES, "image": NAMES})
    path = tmp_path / "model.safetensors"
    save_checkpoint(model, path, extra={"input": {"stride": stride, "fps": fps, "crop": None, "align": align, "margin": 0.25, "stored_size": 64}})
    return path


def demo_video(tmp_path, frames: int = 40):
    clip = np.concatenate([make_clip("surprise", np.random.default_rng(1)), make_clip("sad", np.random.default_rng(2))])[:frames]
    return write_video(tmp_path / "faces.webm", clip), clip


# ----------------------------------------------------------------------------- pure parts


def test_windows_cover_the_whole_video():
    assert window_starts(100, 61, 32) == [0, 32, 39]  # the last window is flush with the end
    assert window_starts(61, 61, 10) == [0]
    assert window_starts(20, 61, 10) == [0]  # shorter than a window: one, padded
    idx = plan_windows(20, 16, 4, 30)
    assert len(idx) == 1 and idx[0][-1] == 19 and list(idx[0][:5]) == [0, 4, 8, 12, 16]
    covered = set().union(*(range(w[0], w[-1] + 1) for w in plan_windows(100, 16, 4, 32)))
    assert covered == set(range(100))
    with pytest.raises(ValueError, match="positive"):
        window_starts(10, 5, 0)


def test_main_face_follows_the_strongest_track_through_gaps_and_cuts():
    frames: list[list[Face]] = []
    for t in range(60):
        if t < 30:  # a large face on the left (missed in 10-12) and a small one on the right
            frames.append(([] if 10 <= t <= 12 else [face(10 + t * 0.5, 80)]) + [face(200, 30, 0.999)])
        elif t < 50:  # a cut: only one other face, then nobody for a long stretch
            frames.append([face(100, 60)])
        else:
            frames.append([face(300, 40)] if t == 55 else [])  # one false detection
    main = main_face(frames, max_gap=4, min_detections=3)
    big = [t for t in range(30) if main[t] is not None]
    assert big == [t for t in range(30) if not 10 <= t <= 12]  # the small face never stands in for the big one
    assert all(main[t].box[2] - main[t].box[0] == 80 for t in big)
    assert all(main[t] is not None and main[t].box[0] == 100 for t in range(30, 50))  # the cut is followed
    assert all(main[t] is None for t in range(50, 60))  # only real detections; the one-frame blip is ignored
    assert main_face(frames, max_gap=4, min_detections=1)[55].box[0] == 300


def test_windows_need_real_detections_and_no_face_segments_are_exact(tmp_path, monkeypatch):
    """A face only in frames 20-39 of 60: windows are classified only where detections cover
    half their span; the no-face report is per frame, never eaten into by face windows."""
    from s4d.infer import outputs as predict_mod

    ckpt = debug_checkpoint(tmp_path, stride=1)
    video, _ = demo_video(tmp_path, frames=60)
    predictor = Predictor(PredictConfig(str(ckpt), hop=2))
    monkeypatch.setattr(predictor, "_detect_stream", lambda path: (25.0, [[face(8, 40)] if 20 <= t < 40 else [] for t in range(60)]))
    result = predictor(video)
    assert result["frames_with_face"] == 20
    for w in result["windows"]:  # 4 frames each at stride 1: a face in at least 2 of them
        real = sum(20 <= t < 40 for t in range(w["start_frame"], w["end_frame"] + 1))
        assert w["face"] == (real >= 2), w
    covered = {t for w in result["windows"] if w["face"] for t in range(w["start_frame"], w["end_frame"] + 1)}
    frames_blank = [t for t in range(60) if t not in covered]
    assert min(covered) == 18 and max(covered) == 41
    assert result["no_face_segments"] == [[0.0, 18 / 25], [42 / 25, 60 / 25]] and frames_blank == [*range(18), *range(42, 60)]
    assert predict_mod.no_face_segments(
        [
            {"start_frame": 0, "end_frame": 60, "face": False},
            {"start_frame": 8, "end_frame": 68, "face": True},
            {"start_frame": 16, "end_frame": 76, "face": False},
        ],
        80,
        25.0,
    ) == [[0.0, 0.32], [2.76, 3.08]]


def test_pixels_match_the_eval_loader():
    """The same frames give the same normalised tensor as the eval pipeline (layout, scale,
    mean/std), so a model sees in ``predict`` what it saw in ``eval``."""
    frames = np.random.default_rng(0).integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
    cfg = LoaderConfig(batch_size=1, train=False, size=64, frames=4, stride=1, augment=Augment.off())
    expected = TorchTransforms(cfg, video=True, stored_size=64)(frames)
    model = build_model("s4d", "debug")
    predictor = Predictor.__new__(Predictor)
    predictor.mean, predictor.std = torch.tensor(cfg.mean).view(3, 1, 1), torch.tensor(cfg.std).view(3, 1, 1)
    torch.testing.assert_close(to_tensor(frames), expected)
    assert expected.shape == (3, 4, 64, 64) and model.config.encoder.img_size == 64


def test_config_validates_itself():
    with pytest.raises(ValueError, match="hop"):
        PredictConfig("x", hop=0)
    with pytest.raises(ValueError, match="device"):
        PredictConfig("x", device="tpu")


# ----------------------------------------------------------------------------- without real media


def test_face_crops_without_alignment_give_a_full_timeline(tmp_path):
    ckpt = debug_checkpoint(tmp_path)
    video, _ = demo_video(tmp_path, frames=40)
    result = Predictor(PredictConfig(str(ckpt), hop=8, align=False))(video)
    assert result["kind"] == "video" and result["frames"] == 40 and result["fps"] == pytest.approx(25.0)
    assert result["window"] == {"frames": 4, "stride": 4, "hop": 8, "align": False, "training_stride": 4, "training_fps": None}
    assert [w["start_frame"] for w in result["windows"]] == [0, 8, 16, 24, 27]
    assert all(w["face"] for w in result["windows"]) and result["no_face_segments"] == []
    for w in result["windows"]:
        assert sum(w["probs"].values()) == pytest.approx(1.0, abs=1e-5) and w["top"] in NAMES
    mean = np.mean([[w["probs"][c] for c in NAMES] for w in result["windows"]], axis=0)
    assert result["prediction"]["class"] == NAMES[int(mean.argmax())]
    assert result["prediction"]["probability"] == pytest.approx(float(mean.max()))

    csv_rows = write_output(result, tmp_path / "w.csv").read_text().splitlines()
    assert csv_rows[0] == "start_s,end_s,face,top,calm,joy,shock" and len(csv_rows) == 6
    assert json.loads(write_output(result, tmp_path / "w.json").read_text())["prediction"] == result["prediction"]
    png = plot_timeline(result, tmp_path / "t.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_the_stride_follows_the_videos_frame_rate(tmp_path):
    """Trained at stride 2 on 12.5 fps clips, a 25 fps video is sampled at stride 4: a window
    spans the same time as a training clip. ``--stride`` overrides."""
    ckpt = debug_checkpoint(tmp_path, stride=2, fps=12.5)
    video, _ = demo_video(tmp_path, frames=40)  # 25 fps
    result = Predictor(PredictConfig(str(ckpt), align=False))(video)
    assert result["window"]["stride"] == 4 and result["window"]["hop"] == 8 and result["window"]["training_fps"] == 12.5
    assert result["windows"][0]["end_frame"] == 12
    assert Predictor(PredictConfig(str(ckpt), align=False, stride=3))(video)["window"]["stride"] == 3


def test_window_probabilities_are_the_models_output_on_those_frames(tmp_path):
    """Windows are classified while the video streams past (crops freed as windows complete);
    every window's probabilities equal the model on those frames decoded the plain way."""
    ckpt = debug_checkpoint(tmp_path, stride=2)
    video, _ = demo_video(tmp_path, frames=40)
    predictor = Predictor(PredictConfig(str(ckpt), hop=3, batch_size=2, align=False))
    result = predictor(video)
    frames, _ = read_video(video)
    starts = [w["start_frame"] for w in result["windows"]]
    assert starts == list(range(0, 34, 3))  # 33 is also the last start that fits
    x = torch.stack([to_tensor(frames[[s, s + 2, s + 4, s + 6]]) for s in starts])
    with torch.no_grad():
        probs = predictor.heads.model(x, "video").softmax(-1)
    got = [list(w["probs"].values()) for w in result["windows"]]
    np.testing.assert_allclose(got, probs.numpy(), atol=1e-6)


def test_authors_weights_need_class_names_and_then_predict(tmp_path):
    """The authors' fine-tuned layout (no config, no names): ``--classes`` names the head."""
    enc = EncoderConfig(img_size=160, num_frames=16, dim=64, depth=2, num_heads=1)  # what a foreign file is assumed to be
    model = Classifier(ModelConfig(encoder=enc, heads={"video": 7, "image": 7}, moae=MoEConfig(blocks=(1,))))
    torch.save({"model": to_reference(model.state_dict()), "epoch": 99}, tmp_path / "s4d_dfew_fold1.pth")
    video, _ = demo_video(tmp_path, frames=70)
    with pytest.raises(CheckpointError, match="--classes"):
        Predictor(PredictConfig(str(tmp_path / "s4d_dfew_fold1.pth"), align=False))
    with pytest.raises(ValueError, match="3 names but the video head has 7"):
        Predictor(PredictConfig(str(tmp_path / "s4d_dfew_fold1.pth"), align=False, classes="a,b,c"))
    predictor = Predictor(PredictConfig(str(tmp_path / "s4d_dfew_fold1.pth"), align=False, classes="dfew"))
    result = predictor(video)
    assert result["classes"][:2] == ["happy", "sad"] and len(result["classes"]) == 7
    assert predictor.names("image")[:2] == ("neutral", "happiness")  # the image head: DFEW's SFER source, AffectNet-7
    with pytest.raises(CheckpointError, match="no class names"):  # a comma list names the video head only
        Predictor(PredictConfig(str(tmp_path / "s4d_dfew_fold1.pth"), align=False, classes="a,b,c,d,e,f,g")).names("image")
    assert result["window"]["stride"] == 4 and len(result["windows"]) == 2  # 61-frame windows over 70 frames
    assert result["prediction"]["class"] in result["classes"]


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "s4d", *args], capture_output=True, text=True)


def test_cli_writes_outputs_and_bad_files_are_one_line(tmp_path):
    ckpt = debug_checkpoint(tmp_path)
    video, clip = demo_video(tmp_path, frames=24)
    ok = run_cli("predict", str(video), "-c", str(ckpt), "--no-align", "--out", str(tmp_path / "o.csv"), "--plot", str(tmp_path / "p.png"))
    assert ok.returncode == 0, ok.stderr
    assert "faces.webm:" in ok.stdout and (tmp_path / "o.csv").is_file() and (tmp_path / "p.png").is_file()

    garbage = tmp_path / "broken.mp4"
    garbage.write_bytes(b"not a video at all" * 20)
    cut = tmp_path / "cut.webm"
    cut.write_bytes(video.read_bytes()[: video.stat().st_size // 2])  # a download that stopped half way
    bad = run_cli(
        "predict", str(garbage), str(cut), str(video), str(tmp_path / "missing.mp4"), "-c", str(ckpt), "--no-align", "--out", str(tmp_path / "many")
    )
    assert bad.returncode == 2  # bad inputs are reported one line each; the good one is still done
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 3, bad.stderr
    for line, path, message in zip(lines, (garbage, cut, tmp_path / "missing.mp4"), ("unreadable video", "breaks off after", "no such file")):
        assert str(path) in line and message in line, line
    assert (tmp_path / "many" / "faces.webm.json").is_file() and "faces.webm:" in bad.stdout
    wrong = run_cli("predict", str(video), "-c", str(ckpt), "--out", str(tmp_path / "o.txt"))
    assert wrong.returncode == 2 and "--out" in wrong.stderr and "faces.webm:" not in wrong.stdout  # refused before any work
    no_gpu = run_cli("predict", str(video), "-c", str(ckpt), "--device", "cuda")
    if not torch.cuda.is_available():
        assert no_gpu.returncode == 2 and "no CUDA device" in no_gpu.stderr and len(no_gpu.stderr.strip().splitlines()) == 1


def test_a_complete_video_with_a_longer_audio_track_is_not_truncated(tmp_path):
    import av

    path = tmp_path / "talk.webm"
    with av.open(str(path), "w") as out:
        v = out.add_stream("libvpx-vp9", rate=25)
        v.width = v.height = 64
        v.pix_fmt = "yuv420p"
        a = out.add_stream("libopus", rate=48000)
        for i in range(50):  # 2 s of video
            for packet in v.encode(av.VideoFrame.from_ndarray(np.full((64, 64, 3), i * 4, np.uint8), format="rgb24")):
                out.mux(packet)
        for packet in v.encode():
            out.mux(packet)
        for k in range(150):  # 3 s of audio
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 960), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 48000, k * 960
            for packet in a.encode(frame):
                out.mux(packet)
        for packet in a.encode():
            out.mux(packet)
    assert len(read_video(path)[0]) == 50


# ----------------------------------------------------------------------------- real faces (MTCNN)


def test_real_face_video_gives_a_full_timeline(tmp_path, fixtures_dir):
    result = Predictor(PredictConfig(str(debug_checkpoint(tmp_path))))(fixtures_dir / "single_face.mp4")
    assert result["frames"] == 72 and result["frames_with_face"] == 72
    assert len(result["windows"]) >= 4 and all(w["face"] for w in result["windows"])
    assert result["windows"][-1]["end_frame"] == 71 and result["prediction"]["class"] in NAMES


def test_video_without_a_face_says_so(tmp_path, fixtures_dir):
    result = Predictor(PredictConfig(str(debug_checkpoint(tmp_path))))(fixtures_dir / "no_face.mp4")
    assert result["prediction"] is None and not any(w["face"] for w in result["windows"])
    assert result["no_face_segments"] == [[0.0, pytest.approx(result["frames"] / result["fps"], abs=1e-3)]]
    assert plot_timeline(result, tmp_path / "none.png").is_file()


def test_still_images_go_through_the_image_head_on_the_main_face(tmp_path, fixtures_dir):
    predictor = Predictor(PredictConfig(str(debug_checkpoint(tmp_path))))
    one = predictor(fixtures_dir / "single_face.jpg")
    assert one["kind"] == "image" and one["head"] == "image" and one["windows"][0]["faces_in_image"] == 1
    assert one["prediction"]["class"] in NAMES
    group = predictor(fixtures_dir / "multi_face.jpg")
    faces = predictor.detector.detect_all(read_image(fixtures_dir / "multi_face.jpg")[None])[0]
    assert group["windows"][0]["faces_in_image"] == len(faces) >= 2
    largest = max(faces, key=lambda f: f.side * f.prob)
    assert group["windows"][0]["box"] == [round(v, 1) for v in largest.box]


def test_a_model_without_a_trained_image_head_reads_images_with_its_video_head(tmp_path, fixtures_dir):
    """Trained with --no-sfer: the image head exists but learned nothing (no class names)."""
    model = build_model("s4d", "debug", video_classes=3, image_classes=7)
    model.config = dataclasses.replace(model.config, class_names={"video": NAMES})
    path = tmp_path / "video_only.safetensors"
    save_checkpoint(model, path, extra={"input": {"stride": 4, "fps": None, "crop": None, "align": False, "margin": 0.25, "stored_size": 64}})
    result = Predictor(PredictConfig(str(path)))(fixtures_dir / "single_face.jpg")
    assert result["head"] == "video" and result["classes"] == list(NAMES) and result["prediction"]["class"] in NAMES


def test_a_one_frame_video_is_a_face_as_in_preprocessing(tmp_path, fixtures_dir):
    from preprocess.shards.encoding import encode_clip

    frame = read_image(fixtures_dir / "single_face.jpg")
    frame = frame[: frame.shape[0] // 2 * 2, : frame.shape[1] // 2 * 2]  # even sides for yuv420p
    video = tmp_path / "one_frame.webm"
    video.write_bytes(encode_clip(frame[None], 25.0, "vp9", 31))
    result = Predictor(PredictConfig(str(debug_checkpoint(tmp_path))))(video)
    assert result["prediction"] is not None and result["windows"][0]["face"]
