"""Our batched MTCNN pass (``preprocess/mtcnn.py``): the same faces as facenet-pytorch's
``detect`` on real frames, its crops and final NMS equal facenet's pieces, a fixed few host
waits per call on (fake) CUDA whatever the number of frames and boxes, and ``s4d shards``
workers sized by GPU memory."""

from unittest import mock

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import preprocess.mtcnn as M
from tests.fakecuda import FakeCuda


@pytest.fixture(scope="module")
def facenet():
    from facenet_pytorch import MTCNN

    return MTCNN(keep_all=True, device="cpu")


def _iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    return iw * ih / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - iw * ih)


def _assert_same_faces(facenet, frames):
    """Every face facenet finds, ours finds (IoU >= 0.9, prob within 0.01, landmarks within 2 px)
    and no other; returns the worst IoU / prob / landmark differences seen."""
    boxes, probs, points = facenet.detect(list(frames), landmarks=True)
    ours = M.BatchedMTCNN.from_facenet(facenet).detect(frames)
    worst = [1.0, 0.0, 0.0]
    for t, (b, p, lm, d) in enumerate(zip(boxes, probs, points, ours)):
        assert (0 if b is None else len(b)) == len(d.boxes_K4), (t, p, d.probs_K)
        for j in range(len(d.boxes_K4)):
            k = max(range(len(d.boxes_K4)), key=lambda k: _iou(b[j], d.boxes_K4[k]))
            iou, dp, dl = _iou(b[j], d.boxes_K4[k]), abs(p[j] - d.probs_K[k]), np.abs(lm[j] - d.points_K52[k]).max()
            assert iou >= 0.9 and dp <= 0.01 and dl <= 2.0, (t, j, iou, dp, dl)
            worst = [min(worst[0], iou), max(worst[1], dp), max(worst[2], dl)]
    return worst


def _small(frames, side=360):
    """As ``FaceDetector`` searches them: downscaled to max side 360."""
    h, w = frames.shape[1:3]
    s = side / max(h, w)
    return np.stack([cv2.resize(f, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA) for f in frames])


def test_same_faces_as_facenet_on_the_real_videos_and_photos(facenet, fixtures_dir):
    from preprocess.media import read_image, read_video

    worst = []
    for name, step in [("single_face.mp4", 6), ("WolfgangLanger_Pexels.mp4", 40), ("no_face.mp4", 10)]:
        frames = read_video(fixtures_dir / name)[0][::step]
        worst.append(_assert_same_faces(facenet, _small(frames)))
        worst.append(_assert_same_faces(facenet, frames[:4]))  # full resolution too
    for name in ("single_face.jpg", "multi_face.jpg"):
        worst.append(_assert_same_faces(facenet, read_image(fixtures_dir / name)[None]))
    # in fact the same up to float rounding: the crops are computed exactly (see test below)
    assert min(w[0] for w in worst) > 0.999 and max(w[1] for w in worst) < 1e-4 and max(w[2] for w in worst) < 0.01


def test_face_detector_keeps_its_answers(facenet, fixtures_dir):
    """``FaceDetector.detect_all`` (now on our pass) against its former facenet-based loop."""
    from preprocess.faces import FaceDetector
    from preprocess.media import read_image

    image = read_image(fixtures_dir / "multi_face.jpg")
    det = FaceDetector("cpu", min_prob=0.5)
    got = det.detect_all(image[None])[0]
    s = det.max_side / max(image.shape[:2])
    boxes, probs, points = facenet.detect([_small(image[None])[0]], landmarks=True)
    boxes, probs, points = (np.asarray(v[0], dtype=np.float64) for v in (boxes, probs, points))
    order = [j for j in np.argsort(-probs, kind="stable") if probs[j] >= 0.5]
    assert len(got) == len(order) >= 4
    for f, j in zip(got, order):
        assert np.allclose(f.box, boxes[j] / s, atol=0.05) and abs(f.prob - probs[j]) < 1e-4
        assert np.allclose(f.landmarks, points[j] / s, atol=0.05)
    first = det.detect(image[None])[0]
    assert first.box == got[0].box and np.array_equal(first.landmarks, got[0].landmarks)


def test_batched_crops_equal_facenets_per_box_crops():
    """All boxes at once from the summed-area table == facenet's cut + area resize per box, also
    for boxes over the frame's edges (clipped as facenet's ``pad``)."""
    g = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (3, 70, 90, 3), dtype=torch.uint8, generator=g)
    xy = torch.rand(40, 2, generator=g) * torch.tensor([110.0, 90.0]) - 10
    boxes = torch.cat([xy, xy + 5 + torch.rand(40, 1, generator=g) * 60], 1)
    image = torch.randint(0, 3, (40,), generator=g)
    for size in (24, 48):
        got = M.crops(M.integral(frames), boxes, image, size)
        imgs = frames.permute(0, 3, 1, 2).float()
        for k in range(len(boxes)):
            x, y, ex, ey = boxes[k].trunc().int().tolist()
            x, y, ex, ey = max(x, 1), max(y, 1), min(ex, 90), min(ey, 70)
            if ey <= y - 1 or ex <= x - 1:  # wholly outside: facenet skips it; ours reads the border
                assert torch.isfinite(got[k]).all()
                continue
            want = F.interpolate(imgs[image[k], None, :, y - 1 : ey, x - 1 : ex], size=(size, size), mode="area")[0]
            assert torch.allclose(got[k], want, atol=1e-3), k


def test_min_nms_equals_facenets():
    from facenet_pytorch.models.utils.detect_face import nms_numpy

    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 100, (60, 2)).astype(np.float32)
    boxes = np.concatenate([xy, xy + rng.uniform(5, 40, (60, 1)).astype(np.float32)], 1)
    scores = rng.permutation(60).astype(np.float32) / 60
    for thr in (0.3, 0.7):
        assert M.min_nms(boxes, scores, thr).tolist() == nms_numpy(boxes, scores, thr, "Min").tolist()


# ---------------------------------------------------------------- fake CUDA: the host waits
def _fake_nets(real):
    """facenet's trained nets (``real``, loaded outside the fake mode) as fake CUDA modules:
    built under ``torch.device("cuda")`` inside it (``module.to("cuda")`` cannot swap fake
    parameters in), the trained weights copied in."""
    with torch.device("cuda"):
        nets = [type(r)(pretrained=False) for r in real]
    for fake, r in zip(nets, real):
        fake.load_state_dict(r.state_dict())
    return nets


def _waits(frames: int, keep: int, numpy_frames: bool = False):
    """One detect call on fake CUDA. ``_select`` and ``_nms`` cannot run in the fake mode
    (their output size is device data: they raise ``HostSync``, see below), so each is counted
    here and answered by a stand-in keeping the first ``keep`` rows; every other host wait is
    left to the fake mode's report (``_to_host``'s copy goes on with zeros)."""
    calls = []

    def select(keep_N):
        calls.append("select")
        return torch.arange(min(len(keep_N), keep), device=keep_N.device)

    def nms(boxes_N4, scores_N, groups_N, iou):
        calls.append("nms")
        return torch.arange(min(len(boxes_N4), keep), device=boxes_N4.device)

    from facenet_pytorch.models.mtcnn import ONet, PNet, RNet

    real = [PNet(), RNet(), ONet()]
    with FakeCuda() as fc:
        det = M.BatchedMTCNN(*_fake_nets(real))
        shape = (frames, 120, 160, 3)
        x = np.zeros(shape, np.uint8) if numpy_frames else torch.zeros(shape, dtype=torch.uint8, device="cuda")
        fc.report.clear()  # the weights' uploads
        with mock.patch.object(M, "_select", select), mock.patch.object(M, "_nms", nms):
            out = fc.run(lambda: det.detect(x))
    return calls, fc.report, out


def test_six_host_waits_per_call_whatever_the_frames_and_boxes():
    """2 selections + 3 NMS (counted at the helpers) + 1 device-to-host copy (seen by the fake
    mode), for 1 or 6 frames and 2 or 60 boxes per stage; nothing else waits or uploads."""
    for frames, keep in [(1, 2), (6, 2), (6, 60)]:
        calls, report, out = _waits(frames, keep)
        assert report.error is None and out is not None and len(out) == frames, report.summary()
        assert sorted(calls) == ["nms"] * 3 + ["select"] * 2, calls
        assert [(e.op, e.where.split(":")[0], e.where.split(" in ")[1]) for e in report.syncs] == [("_to_copy", "preprocess/mtcnn.py", "_to_host")], (
            report.summary()
        )
        assert not report.uploads, report.summary()


def test_host_frames_are_one_non_blocking_upload_and_an_empty_stage_stops_early():
    calls, report, out = _waits(4, 2, numpy_frames=True)
    assert [u.detail for u in report.uploads] == ["(4, 120, 160, 3) uint8 pinned non_blocking"], report.summary()
    calls, report, out = _waits(4, 0)  # no P-Net cell over the threshold: one wait, empty answers
    assert calls == ["select"] and not report.syncs and [len(d.probs_K) for d in out] == [0] * 4


def test_the_helpers_are_real_host_waits():
    """What the stand-ins replace: in the fake mode each helper raises ``HostSync`` (a GPU would
    make the host wait there), so the count above is the count of real waits."""
    for fn in (
        lambda: M._select(torch.zeros(10, device="cuda") > 0),
        lambda: M._nms(torch.zeros(10, 4, device="cuda"), torch.zeros(10, device="cuda"), torch.zeros(10, device="cuda"), 0.5),
    ):
        with FakeCuda(on_sync="raise") as fc:
            fc.run(fn)
        assert len(fc.report.syncs) == 1 and fc.report.syncs[0].where.startswith("preprocess/mtcnn.py:"), fc.report.summary()


def test_an_added_item_is_caught():
    real = M.square

    def with_item(boxes_N4):
        boxes_N4.sum().item()
        return real(boxes_N4)

    with mock.patch.object(M, "square", with_item):
        _, report, _ = _waits(2, 3)
    assert [e.op for e in report.syncs].count("_local_scalar_dense") == 2  # P-Net and R-Net stages


# ---------------------------------------------------------------- s4d shards workers on CUDA
def test_shard_workers_on_cuda_are_sized_by_free_gpu_memory(monkeypatch):
    from preprocess import run

    monkeypatch.setattr("preprocess.machine.cpus_per_process", lambda: (64, "64 cores"))
    gib = 2**30
    for free, want in [(80 * gib, 48), (10 * gib, 6), (1 * gib, 1)]:  # 0.9 * free / 1.5 GiB, at least 1
        monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None, free=free: (free, 80 * gib))
        n, why = run.default_workers("cuda")
        assert n == want and f"{free / gib:.1f} GiB GPU memory free, 1.5 GiB per worker" in why, why
    monkeypatch.setattr("preprocess.machine.cpus_per_process", lambda: (8, "8 cores"))
    asked = []
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (asked.append(device), (80 * gib, 80 * gib))[1])
    assert run.default_workers("cuda:1")[0] == 8 and asked == [torch.device("cuda:1")]  # the cores bound it first
    assert run.default_workers("cpu") == (8, "8 cores")

    def no_driver(device=None):
        raise RuntimeError("Found no NVIDIA driver on your system")

    monkeypatch.setattr(torch.cuda, "mem_get_info", no_driver)
    assert run.default_workers("cuda") == (4, "8 cores; at most 4 on CUDA")
