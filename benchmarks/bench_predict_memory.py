"""Memory of `s4d predict`'s detection pass on a long video: resident memory after the first
detection batch, a quarter of the way, at the end, and the peak. The video is a real face clip
(``../shared/fixtures/single_face.mp4``) played back and forth to the asked length, so MTCNN
finds a face in every frame.

    python benchmarks/bench_predict_memory.py --seconds 600            # as predict runs
    python benchmarks/bench_predict_memory.py --seconds 600 --no-trim  # without returning freed heap pages
"""

from __future__ import annotations

import argparse
import dataclasses
import resource
import sys
import tempfile
import time
from pathlib import Path

import av

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from s4d import build_model, save_checkpoint  # noqa: E402
from s4d.infer import predictor as P  # noqa: E402


def long_video(src: Path, seconds: int, out: Path) -> tuple[int, int, int, float]:
    with av.open(str(src)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        fps = float(c.streams.video[0].average_rate)
    h, w = frames[0].shape[:2]
    n = int(seconds * fps)
    with av.open(str(out), "w") as o:
        s = o.add_stream("mpeg4", rate=round(fps))
        s.width, s.height, s.pix_fmt, s.bit_rate = w, h, "yuv420p", 2_000_000
        for i in range(n):
            k = i % (2 * len(frames))
            o.mux(s.encode(av.VideoFrame.from_ndarray(frames[k if k < len(frames) else 2 * len(frames) - 1 - k], format="rgb24")))
        o.mux(s.encode(None))
    return n, w, h, fps


def rss_mb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=600)
    ap.add_argument("--video", type=Path, default=Path(__file__).resolve().parents[2] / "shared/fixtures/single_face.mp4")
    ap.add_argument("--no-trim", action="store_true", help="skip malloc_trim (the behaviour before the fix)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="s4d-mem-"))
    n, w, h, fps = long_video(args.video, args.seconds, tmp / "long.mp4")
    model = build_model("s4d", "debug", video_classes=3)
    model.config = dataclasses.replace(model.config, class_names={"video": ("a", "b", "c")})
    save_checkpoint(model, tmp / "model.safetensors")
    predictor = P.Predictor(P.PredictConfig(str(tmp / "model.safetensors")))
    if args.no_trim:
        P.release_freed_memory = lambda: None
    samples: list[float] = []
    detect = predictor._detect

    def measured(path, frames):
        out = detect(path, frames)
        samples.append(rss_mb())
        return out

    predictor._detect = measured
    t0 = time.perf_counter()
    predictor._detect_stream(tmp / "long.mp4")
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"detection pass over {n} frames ({args.seconds} s of {w}x{h} at {fps:.0f} fps){' without malloc_trim' if args.no_trim else ''}: "
        f"{seconds:.0f} s; resident MB after the first batch {samples[0]:.0f}, at 25% {samples[len(samples) // 4]:.0f}, "
        f"at the end {samples[-1]:.0f}; peak {peak:.0f}"
    )
    print(f"command: python benchmarks/bench_predict_memory.py --seconds {args.seconds}{' --no-trim' if args.no_trim else ''}")


if __name__ == "__main__":
    main()
