"""``s4d predict --faces all``: one track per person through videos composed from two real
people's clips (side by side, one leaving mid-video, two crossing), and one answer per face in
a group photo, largest first. The main-face mode is unchanged (tests/test_predict.py)."""

import json

import cv2
import numpy as np
import pytest

from preprocess.faces import FaceDetector
from preprocess.media import read_image, read_video
from s4d.infer import PredictConfig, Predictor, write_output
from s4d.plots import plot_timeline
from tests.media_factory import write_video
from tests.test_predict import NAMES, debug_checkpoint

FRAMES, SIDE, H, W = 48, 120, 180, 400


def _face_clip(path, detector) -> np.ndarray:
    """(FRAMES, SIDE, SIDE, 3): a square around the person's face, from the real video."""
    frames, _ = read_video(path)
    frames = frames[:FRAMES]
    face = detector.detect(frames[:1])[0]
    assert face is not None, path
    cx, cy = face.center
    half = int(0.9 * face.side)
    y0, x0 = max(int(cy) - half, 0), max(int(cx) - half, 0)
    return np.stack([cv2.resize(f[y0 : y0 + 2 * half, x0 : x0 + 2 * half], (SIDE, SIDE), interpolation=cv2.INTER_AREA) for f in frames])


@pytest.fixture(scope="module")
def people(fixtures_dir):
    detector = FaceDetector(device="cpu")
    return _face_clip(fixtures_dir / "single_face.mp4", detector), _face_clip(fixtures_dir / "WolfgangLanger_Pexels.mp4", detector)


def compose(a, b, xa, xb, b_until=FRAMES):
    """Person a at x positions ``xa`` and b at ``xb`` per frame (b drawn on top; gone from
    ``b_until`` on), on a grey canvas."""
    canvas = np.full((FRAMES, H, W, 3), 110, np.uint8)
    for t in range(FRAMES):
        canvas[t, 30 : 30 + SIDE, xa[t] : xa[t] + SIDE] = a[t]
        if t < b_until:
            canvas[t, 30 : 30 + SIDE, xb[t] : xb[t] + SIDE] = b[t]
    return canvas


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    ckpt = debug_checkpoint(tmp_path_factory.mktemp("ckpt"), stride=2)
    return Predictor(PredictConfig(str(ckpt), faces="all", hop=4))


def _centres(track):
    return {w["start_frame"]: w for w in track["windows"]}


def test_two_people_side_by_side_get_a_track_each(people, predictor, tmp_path):
    a, b = people
    video = write_video(tmp_path / "side.webm", compose(a, b, [20] * FRAMES, [260] * FRAMES))
    result = predictor(video)
    tracks = result["tracks"]
    assert len(tracks) == 2 and result["faces"] == "all"
    xs = sorted(t["first_box"][0] for t in tracks)
    assert xs[0] < 150 < xs[1]  # one on the left, one on the right
    for t in tracks:
        assert t["frames_with_face"] >= 0.9 * FRAMES and t["prediction"]["class"] in NAMES
        assert all(w["face"] for w in t["windows"]) and t["no_face_segments"] == []
    assert {w["track"] for w in result["windows"]} == {0, 1}
    csv_path = write_output(result, tmp_path / "side.csv")
    header = csv_path.read_text().splitlines()[0].split(",")
    assert header[0] == "track" and len(csv_path.read_text().splitlines()) == 1 + len(result["windows"])
    assert plot_timeline(result, tmp_path / "side.png").read_bytes()[:4] == b"\x89PNG"


def test_a_person_leaving_mid_video_ends_in_no_face(people, predictor, tmp_path):
    a, b = people
    video = write_video(tmp_path / "leave.webm", compose(a, b, [20] * FRAMES, [260] * FRAMES, b_until=FRAMES // 2))
    result = predictor(video)
    stay, leave = sorted(result["tracks"], key=lambda t: -t["frames_with_face"])
    assert stay["frames_with_face"] >= 0.9 * FRAMES
    assert FRAMES // 2 - 4 <= leave["last_frame"] < FRAMES // 2 + 1
    late = [w for w in leave["windows"] if w["start_frame"] >= FRAMES // 2]
    assert late and not any(w["face"] for w in late)  # after leaving: "no face", never classified
    assert leave["no_face_segments"] and leave["no_face_segments"][-1][1] == pytest.approx(FRAMES / 25.0, abs=0.05)
    assert all(w["face"] for w in stay["windows"])


def test_two_people_crossing_keep_their_tracks(people, predictor, tmp_path):
    a, b = people
    xa = np.linspace(10, W - SIDE - 10, FRAMES).astype(int)
    xb = xa[::-1].copy()
    video = write_video(tmp_path / "cross.webm", compose(a, b, xa, xb))
    result = predictor(video)
    assert len(result["tracks"]) == 2
    tracks = {("right" if t["first_box"][0] < W / 2 else "left"): t for t in result["tracks"]}  # a starts left, moves right
    assert set(tracks) == {"right", "left"}
    # per track, its boxes move one way only: an identity swap at the crossing would turn it back
    for direction, track in tracks.items():
        assert track["frames_with_face"] >= 0.6 * FRAMES  # the one behind is hidden while they overlap
        assert track["first_frame"] <= 4 and track["last_frame"] >= FRAMES - 5  # the same track before and after
        xs = [w["box"][0] for w in sorted(track["windows"], key=lambda w: w["start_frame"]) if w["face"]]
        steps = np.diff(xs) if direction == "right" else -np.diff(xs)
        assert len(xs) >= 6 and (steps > -8).all(), (direction, xs)
        assert abs(xs[-1] - xs[0]) > W / 2  # and it crossed the frame


def test_a_group_photo_gets_one_answer_per_face_largest_first(fixtures_dir, predictor, tmp_path):
    result = predictor(fixtures_dir / "multi_face.jpg")
    faces = [w for w in result["windows"] if w["face"]]
    assert len(faces) == len(result["tracks"]) >= 3 and [w["track"] for w in faces] == list(range(len(faces)))
    sides = [max(w["box"][2] - w["box"][0], w["box"][3] - w["box"][1]) for w in faces]
    assert sides == sorted(sides, reverse=True)  # largest first
    assert result["prediction"] == result["tracks"][0]["prediction"]
    image = read_image(fixtures_dir / "multi_face.jpg")
    assert all(0 <= w["box"][0] < image.shape[1] for w in faces)
    json.dumps(result)  # the whole result is JSON


def test_a_live_stream_through_a_pipe_prints_each_window_as_it_completes(people, tmp_path):
    """The composed two-person video fed into ``s4d predict --live -`` at its own frame rate."""
    import subprocess
    import sys
    import time

    from tests.test_bad_inputs import ROOT

    a, b = people
    video = write_video(tmp_path / "live.webm", compose(a, b, [20] * FRAMES, [260] * FRAMES), fps=25.0)
    ckpt = debug_checkpoint(tmp_path, stride=2)
    feeder = (
        "import sys, time; data = open(sys.argv[1], 'rb').read(); n = int(sys.argv[2]); step = -(-len(data) // n)\n"
        "for i in range(0, len(data), step):\n    sys.stdout.buffer.write(data[i:i + step]); sys.stdout.flush(); time.sleep(1 / 25)\n"
    )
    env = {"PYTHONPATH": str(ROOT), "COLUMNS": "300"}
    import os

    feed = subprocess.Popen([sys.executable, "-c", feeder, str(video), str(FRAMES)], stdout=subprocess.PIPE)
    t0 = time.perf_counter()
    run = subprocess.run(
        [sys.executable, "-m", "s4d", "predict", "--live", "-", "-c", str(ckpt), "--faces", "all", "--hop", "4"],
        stdin=feed.stdout,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **env},
    )
    feed.wait()
    assert run.returncode == 0, run.stderr
    lines = [json.loads(x) for x in run.stdout.splitlines()]
    windows, summary = lines[:-1], lines[-1]["summary"]
    from s4d import build_model

    span = (build_model("s4d", "debug").config.encoder.num_frames - 1) * 2 + 1  # the window at stride 2
    closed = (FRAMES - span) // 4 + 1
    assert sorted({w["window"] for w in windows}) == list(range(closed))
    faces = [w for w in windows if w["face"]]
    assert {w["track"] for w in faces} == {0, 1} and len(faces) == 2 * closed  # both people in every window
    assert all(w["top"] in NAMES and abs(sum(w["probs"].values()) - 1) < 1e-4 for w in faces)
    assert all(0 <= w["latency_ms"] < 30_000 for w in windows)
    assert summary["frames"] == FRAMES and set(summary["tracks"]) == {"0", "1"}
    assert time.perf_counter() - t0 >= FRAMES / 25 * 0.9  # it really was fed at the frame rate


def test_ctrl_c_ends_a_live_run_with_the_summary_so_far(people, tmp_path):
    import os
    import signal
    import subprocess
    import sys

    from tests.test_bad_inputs import ROOT

    a, b = people
    video = write_video(tmp_path / "live.webm", compose(a, b, [20] * FRAMES, [260] * FRAMES), fps=25.0)
    ckpt = debug_checkpoint(tmp_path, stride=2)
    feeder = (
        "import sys, time; data = open(sys.argv[1], 'rb').read(); step = -(-len(data) // 200)\n"
        "for i in range(0, len(data), step):\n    sys.stdout.buffer.write(data[i:i + step]); sys.stdout.flush(); time.sleep(0.05)\n"
    )
    feed = subprocess.Popen([sys.executable, "-c", feeder, str(video)], stdout=subprocess.PIPE)
    run = subprocess.Popen(
        [sys.executable, "-m", "s4d", "predict", "--live", "-", "-c", str(ckpt), "--hop", "2"],
        stdin=feed.stdout,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    first = json.loads(run.stdout.readline())  # the first window is out: the run is live
    assert "window" in first
    run.send_signal(signal.SIGINT)
    rest, err = run.communicate(timeout=120)
    feed.kill()
    lines = [first] + [json.loads(x) for x in rest.splitlines()]
    assert run.returncode == 0, err
    summary = lines[-1]["summary"]
    assert 0 < summary["frames"] < FRAMES and summary["windows"] == len(lines) - 1  # what had arrived, and no more
    assert "Traceback" not in err
