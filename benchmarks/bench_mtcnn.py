"""MTCNN detection, facenet-pytorch's ``detect`` against ours (``preprocess/mtcnn.py``), side by side.

    python benchmarks/bench_mtcnn.py                      # ../shared/fixtures/WolfgangLanger_Pexels.mp4, CPU
    python benchmarks/bench_mtcnn.py --device cuda --rounds 5

The frames are those ``FaceDetector`` searches (downscaled to max side 360), in batches of 32;
both detectors run on the same batches, alternating, ``--rounds`` times; the figure is the
median of the per-round totals (load from other processes moves both alike). Also printed:
whether both found the same faces, and the host waits per detect call of each, counted on CPU
tensors by the ops that make a CUDA host wait (``.item()``-like reads, ``nonzero`` and boolean
masks, ``nms``, ``unique``, ``.cpu()``), with torchvision's batched NMS in the form it takes on
CUDA. On CUDA: the peak memory of our detector (what ``default_workers`` budgets per worker).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections import Counter
from pathlib import Path
from unittest import mock

import cv2
import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from preprocess.media import read_video
from preprocess.mtcnn import BatchedMTCNN

WAITS = {"nonzero", "_local_scalar_dense", "masked_select", "unique_dim", "_unique2", "unique_consecutive", "nms"}


class _Waits(TorchDispatchMode):
    """Counts the ops that would make the host wait if the tensors were on a GPU."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in WAITS or (name == "index" and any(getattr(i, "dtype", None) == torch.bool for i in args[1] if i is not None)):
            self.seen[name if name != "index" else "boolean mask"] += 1
        return func(*args, **(kwargs or {}))


def count_waits(fn) -> Counter[str]:
    from torchvision.ops import boxes

    spy = _Waits()
    real_cpu = torch.Tensor.cpu

    def cpu(t, *a, **k):
        spy.seen[".cpu()"] += 1
        return real_cpu(t, *a, **k)

    with mock.patch.object(torch.Tensor, "cpu", cpu), mock.patch.object(boxes, "_batched_nms_vanilla", boxes._batched_nms_coordinate_trick), spy:
        fn()
    return spy.seen


def same_faces(theirs, ours) -> str:
    """Worst IoU / |prob| / landmark difference over facenet's faces, matched to ours by IoU."""
    worst, missing = [1.0, 0.0, 0.0], 0
    for (boxes, probs, points), d in zip(zip(*theirs), ours):
        for j in range(0 if boxes is None else len(boxes)):
            a, bs = boxes[j], d.boxes_K4
            iw = np.clip(np.minimum(a[2], bs[:, 2]) - np.maximum(a[0], bs[:, 0]), 0, None)
            ih = np.clip(np.minimum(a[3], bs[:, 3]) - np.maximum(a[1], bs[:, 1]), 0, None)
            iou = iw * ih / ((a[2] - a[0]) * (a[3] - a[1]) + (bs[:, 2] - bs[:, 0]) * (bs[:, 3] - bs[:, 1]) - iw * ih)
            if not len(iou) or iou.max() < 0.5:
                missing += 1
                continue
            k = int(iou.argmax())
            worst = [min(worst[0], iou[k]), max(worst[1], abs(probs[j] - d.probs_K[k])), max(worst[2], np.abs(points[j] - d.points_K52[k]).max())]
    extra = sum(len(d.probs_K) for d in ours) - sum(0 if b is None else len(b) for b in theirs[0])
    return f"missing {missing}, extra {extra}, worst IoU {worst[0]:.5f}, prob diff {worst[1]:.2g}, landmark diff {worst[2]:.2g} px"


def main() -> None:
    default_video = Path(os.environ.get("S4D_FIXTURES", Path(__file__).resolve().parents[2] / "shared" / "fixtures")) / "WolfgangLanger_Pexels.mp4"
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--video", type=Path, default=default_video)
    ap.add_argument("--frames", type=int, default=0, help="frames from the start (0: all)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--max-side", type=int, default=360)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    if not args.video.is_file():
        raise SystemExit(f"error: {args.video}: no such video (set S4D_FIXTURES or pass --video)")
    from facenet_pytorch import MTCNN

    frames = read_video(args.video)[0]
    frames = frames[: args.frames or len(frames)]
    h, w = frames.shape[1:3]
    s = min(1.0, args.max_side / max(h, w))
    small = np.stack([cv2.resize(f, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA) for f in frames]) if s < 1 else frames
    batches = [small[i : i + args.batch] for i in range(0, len(small), args.batch)]
    facenet = MTCNN(keep_all=True, device=args.device)
    ours = BatchedMTCNN.from_facenet(facenet)
    cuda = args.device.startswith("cuda")

    def clock(fn):
        if cuda:
            torch.cuda.synchronize()
        t = time.perf_counter()
        out = [fn(b) for b in batches]
        if cuda:
            torch.cuda.synchronize()
        return out, time.perf_counter() - t

    old_fn, new_fn = (lambda b: facenet.detect(list(b), landmarks=True)), ours.detect
    old_fn(batches[0]), new_fn(batches[0])  # warm-up
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t_old, t_new = [], []
    for _ in range(args.rounds):
        old_out, t = clock(old_fn)
        t_old.append(t)
        new_out, t = clock(new_fn)
        t_new.append(t)
    a, b = statistics.median(t_old), statistics.median(t_new)
    n = len(small)
    print(
        f"{n} frames of {args.video.name} at {small.shape[2]}x{small.shape[1]}, batches of {args.batch}, {args.device}, "
        f"{torch.get_num_threads()} threads, median of {args.rounds} rounds"
    )
    print(f"facenet detect: {a:.3f} s ({n / a:.1f} frames/s); ours: {b:.3f} s ({n / b:.1f} frames/s); old/new time ratio {a / b:.2f}x")
    print(
        "same faces: " + "; ".join(same_faces(o, q) for o, q in zip(old_out, new_out))
        if len(batches) < 3
        else "same faces (first batch): " + same_faces(old_out[0], new_out[0])
    )
    if cuda:
        print(
            f"our peak CUDA memory: {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB allocated, "
            f"{torch.cuda.max_memory_reserved() / 2**20:.0f} MiB reserved (plus the CUDA context)"
        )
    else:
        cpu_facenet = MTCNN(keep_all=True, device="cpu")
        cpu_ours = BatchedMTCNN.from_facenet(cpu_facenet)
        before = count_waits(lambda: cpu_facenet.detect(list(batches[0]), landmarks=True))
        after = count_waits(lambda: cpu_ours.detect(batches[0]))
        boxes = sum(0 if x is None else len(x) for x in old_out[0][0])
        print(
            f"host waits per detect call of {len(batches[0])} frames ({boxes} faces): facenet {sum(before.values())} "
            f"{dict(before)}; ours {sum(after.values())} {dict(after)}"
        )
    print(f"command: python benchmarks/bench_mtcnn.py --rounds {args.rounds} --device {args.device}")


if __name__ == "__main__":
    main()
