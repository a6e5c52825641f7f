"""Speed of `s4d predict` on the real fixture video: frames per second, the real-time factor
(processing time / video duration; below 1 is faster than real time), and where the time goes
(MTCNN detection, alignment of the window frames, the model on the windows), for the base
model with random weights (speed does not depend on them); then the live path's latency per
window (window's last frame in -> its result out) on the same frames.

    python benchmarks/bench_predict.py [--size base] [--video ../shared/fixtures/single_face.mp4]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from preprocess.media import read_video  # noqa: E402
from s4d import build_model, save_checkpoint  # noqa: E402
from s4d.infer import PredictConfig, Predictor  # noqa: E402


def timed(obj, name: str, totals: dict[str, float], key: str) -> None:
    real = getattr(obj, name)

    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return real(*args, **kwargs)
        finally:
            totals[key] += time.perf_counter() - t0

    setattr(obj, name, wrapper)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="base")
    ap.add_argument("--video", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "single_face.mp4")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="s4d-bench-predict-"))
    model = build_model("s4d", args.size, video_classes=7, image_classes=7)
    model.config = dataclasses.replace(model.config, class_names={"video": tuple(f"c{i}" for i in range(7))})
    save_checkpoint(
        model,
        tmp / "model.safetensors",
        extra={"input": {"stride": 4, "fps": 30.0, "crop": None, "align": True, "margin": 0.25, "stored_size": model.config.encoder.img_size}},
    )
    predictor = Predictor(PredictConfig(str(tmp / "model.safetensors"), device=args.device))
    totals = {"detection": 0.0, "alignment": 0.0, "model": 0.0}
    timed(predictor, "_detect", totals, "detection")
    prep = predictor.prep
    prep_frame = prep.frame

    class TimedPrep:  # FacePrep is frozen: time its frame() through a stand-in
        def __getattr__(self, name):
            return getattr(prep, name)

        def frame(self, *a, **kw):
            t0 = time.perf_counter()
            try:
                return prep_frame(*a, **kw)
            finally:
                totals["alignment"] += time.perf_counter() - t0

    predictor.prep = TimedPrep()
    timed(predictor.heads, "probs", totals, "model")
    predictor(args.video)  # warm-up: MTCNN weights, first model call
    totals.update({k: 0.0 for k in totals})
    t0 = time.perf_counter()
    result = predictor(args.video)
    total = time.perf_counter() - t0
    n, fps = result["frames"], result["fps"]
    print(
        f"s4d predict, {args.size} model on {args.video.name} ({n} frames, {n / fps:.1f} s at {fps:.0f} fps, "
        f"{len(result['windows'])} windows), {torch.get_num_threads()} torch threads, device {predictor.device}:"
    )
    print(f"  total {total:.2f} s = {n / total:.1f} frames/s, real-time factor {total / (n / fps):.2f}")
    for k, v in totals.items():
        print(f"  {k:<10} {v:6.2f} s  ({100 * v / total:4.1f}%)")
    print(f"  other      {total - sum(totals.values()):6.2f} s  (decoding both passes, tracking)")
    frames, fps = read_video(args.video)
    latencies = [w["latency_ms"] for w in predictor.stream(iter(frames), fps) if "latency_ms" in w]
    print(
        f"live (Predictor.stream, frames pushed as fast as taken): {len(latencies)} windows, latency median "
        f"{statistics.median(latencies):.0f} ms, max {max(latencies):.0f} ms (last frame in -> result out)"
    )
    print(f"reproduce: python benchmarks/bench_predict.py --size {args.size} --video {args.video}")


if __name__ == "__main__":
    main()
