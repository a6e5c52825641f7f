"""Preprocessing throughput: frames/s through each stage for one real face video.

    python benchmarks/bench_preprocess.py                 # ../shared/fixtures/WolfgangLanger_Pexels.mp4
    python benchmarks/bench_preprocess.py --video my.mp4 --frames 200 --device cuda

Stages, timed separately on the same frames: decode (PyAV), MTCNN detection at full
resolution and on the downscaled copy the pipeline uses (``FaceDetector.max_side``), eye-line
alignment + crop to 160 px, VP9 encoding. The last line is the whole per-clip path
(decode + downscaled detection + alignment + encoding) in frames/s.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from preprocess.faces import FaceDetector, align_clip
from preprocess.media import read_video
from preprocess.shards.encoding import encode_clip


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    default_video = Path(os.environ.get("S4D_FIXTURES", Path(__file__).resolve().parents[2] / "shared" / "fixtures")) / "WolfgangLanger_Pexels.mp4"
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--video", type=Path, default=default_video)
    ap.add_argument("--frames", type=int, default=120, help="frames to process (from the start)")
    ap.add_argument("--size", type=int, default=160)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    if not args.video.is_file():
        raise SystemExit(f"error: {args.video}: no such video (set S4D_FIXTURES or pass --video)")

    (all_frames, fps), t_decode = timed(lambda: read_video(args.video))
    frames = all_frames[: args.frames]
    t_decode *= len(frames) / len(all_frames)
    full = FaceDetector(args.device, max_side=10_000)
    small = FaceDetector(args.device)
    full.detect(frames[:4]), small.detect(frames[:4])  # warm-up
    faces_full, t_full = timed(lambda: full.detect(frames))
    faces, t_small = timed(lambda: small.detect(frames))
    clip, t_align = timed(lambda: align_clip(frames, faces, 0.25, args.size, 0.5))
    _, t_encode = timed(lambda: encode_clip(clip.frames, fps, "vp9", 31))

    n = len(frames)
    h, w = frames.shape[1:3]
    rows = [
        ("decode (PyAV)", f"{w}x{h}", t_decode),
        ("MTCNN, full resolution", f"{w}x{h}", t_full),
        (f"MTCNN, max side {small.max_side}", "downscaled", t_small),
        ("align + crop", f"{args.size}px", t_align),
        ("encode VP9 crf 31", f"{args.size}px", t_encode),
        ("whole clip path", "decode+detect+align+encode", t_decode + t_small + t_align + t_encode),
    ]
    found_full = sum(f is not None for f in faces_full)
    table = Table(title=f"preprocessing, {n} frames of {args.video.name}, {args.device}, {torch.get_num_threads()} threads")
    for col in ("stage", "input", "seconds", "frames/s"):
        table.add_column(col)
    for name, what, sec in rows:
        table.add_row(name, what, f"{sec:.2f}", f"{n / sec:.1f}")
    console = Console()
    console.print(table)
    console.print(
        f"faces found: {clip.faces_found}/{n} (downscaled), {found_full}/{n} (full resolution); "
        f"detection speed-up from downscaling: {t_full / t_small:.2f}x"
    )
    console.print(f"command: python benchmarks/bench_preprocess.py --frames {args.frames} --device {args.device}")


if __name__ == "__main__":
    main()
