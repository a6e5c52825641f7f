"""Peak memory (ru_maxrss) of ``s4d shards`` on one generated video that declares many large
frames: with streaming, memory is one decoded frame plus the small output clip, not the video.

    python benchmarks/bench_memory.py --frames 100 --side 2048          # writes the video once, then measures
    PYTHONPATH=/path/to/other/tree python benchmarks/bench_memory.py ...  # the same on another checkout
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
from pathlib import Path

import numpy as np


def make_video(path: Path, frames: int, side: int) -> None:
    """A VP9 WebM of ``frames`` frames of side x side: a drifting square on a flat background (small file)."""
    from preprocess.shards.encoding import encode_clip

    clip = np.full((frames, side, side, 3), 90, np.uint8)
    for t in range(frames):
        clip[t, 40 + 4 * t : 240 + 4 * t, 40 + 8 * t : 240 + 8 * t] = (200, 120, 40)
    path.write_bytes(encode_clip(clip, 25.0, "vp9", 40))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--side", type=int, default=2048)
    ap.add_argument("--video", type=Path, default=Path(tempfile.gettempdir()) / "s4d_bench_memory.webm")
    args = ap.parse_args()
    if not args.video.is_file():
        make_video(args.video, args.frames, args.side)
        print(f"wrote {args.video} ({args.video.stat().st_size / 1e3:.0f} KB); run again to measure in a fresh process")
        return
    import preprocess
    from preprocess.manifest import parse_manifest
    from preprocess.run import run_shards

    work = Path(tempfile.mkdtemp())
    (work / args.video.name).symlink_to(args.video)
    (work / "list.csv").write_text(f"path,label,split\n{args.video.name},a,train\n")
    m = parse_manifest(
        {
            "name": "bench",
            "modality": "video",
            "classes": ["a", "b"],
            "layout": {"adapter": "csv", "options": {"csv": "list.csv"}},
            "preprocess": {"align": False, "size": 160},
            "partitions": ["train", "test"],
            "folds": {"main": {"train": ["train"], "test": ["test"]}},
            "clip": {"frames": 4, "stride": 1},
        },
        work / "bench.json",
    )
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    run_shards(m, work, work / "out")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        f"{preprocess.__file__}: {args.video.name} {args.video.stat().st_size / 1e3:.0f} KB: peak RSS {peak / 1024:.0f} MiB "
        f"({before / 1024:.0f} MiB before run_shards)",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
