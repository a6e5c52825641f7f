"""Clip codec benchmark: VP9 (WebM) vs MJPEG for the stored face clips, decoded by DALI.

    python benchmarks/bench_codec.py                          # defaults: 6 clips x 64 frames
    python benchmarks/bench_codec.py --clips 4 --iters 10 --vp9-crf 24,31 --mjpeg-q 3,5

The shards store aligned 160x160 RGB face clips; this script measures, per codec setting:

* size: bytes of the encoded clip (container included), per clip and per frame;
* quality: PSNR (dB) of every frame decoded back with PyAV against the source RGB frames
  (one MSE over all pixels of all clips, so sizes are compared at a known quality);
* encode speed: frames/s of a single-threaded PyAV encode + mux into memory;
* decode speed: clips/s and frames/s of ``fn.decoders.video`` (DALI, CPU backend by default)
  with the training sampling - 16 frames, stride 4, from a random start frame - so only the
  needed frames are requested. Every setting is timed in alternation (A B A B ...) on
  synchronous pipelines, so machine noise hits them alike; the figure is the median per batch.

Before timing, every setting is checked: the frames DALI returns must be the frames at the
requested indices (each matches the PyAV decode of that index better than its neighbours),
and a small probe reports which containers/codecs the DALI backend accepts and how
``pad_mode`` behaves when the sampled window runs past the end of a clip.

Test clips come from the real talking-face video in ../shared/fixtures when it exists (a fixed
square crop around the face, resized to 160x160); otherwise they are synthesised with numpy,
so the script runs anywhere (the synthetic numbers are not representative of real faces).
"""

from __future__ import annotations

import argparse
import io
import math
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import av
import cv2
import numpy as np
from nvidia.dali import fn, pipeline_def, types
from rich.console import Console
from rich.table import Table

FIXTURE = Path(os.environ.get("S4D_FIXTURES", Path(__file__).resolve().parents[2] / "shared" / "fixtures"))
REAL_VIDEO = FIXTURE / "WolfgangLanger_Pexels.mp4"
# Square (x, y, side) around the face in the 640x360 fixture; the face stays inside it over the clip.
FACE_BOX = (280, 50, 300)
SIZE = 160
FPS = 25


@dataclass
class Setting:
    """One codec configuration and what was measured for it."""

    name: str
    codec: str  # PyAV encoder name
    container: str  # PyAV/FFmpeg muxer name
    pix_fmt: str
    options: dict[str, str] = field(default_factory=dict)  # encoder private options
    qscale: int | None = None  # MJPEG constant quantiser (qmin = qmax = q, i.e. ffmpeg -q:v q)
    encoded: list[bytes] = field(default_factory=list)
    encode_s: float = 0.0
    psnr: float = float("nan")
    decode_s: list[float] = field(default_factory=list)
    index_errors: int = 0

    def describe(self) -> str:
        if self.qscale is not None:
            return f"{self.container} {self.pix_fmt} q={self.qscale}"
        opts = " ".join(f"{k}={v}" for k, v in self.options.items() if k != "crf")
        return f"{self.container} {self.pix_fmt} {opts}"


# ----------------------------------------------------------------------------------- test clips


def load_real_clips(n_clips: int, length: int) -> list[np.ndarray]:
    """Decode the fixture, crop the face square, resize to 160x160 and cut ``n_clips`` clips of
    ``length`` frames spread evenly over the video (they may overlap when the video is short)."""
    x, y, side = FACE_BOX
    frames = []
    with av.open(str(REAL_VIDEO)) as container:
        for frame in container.decode(video=0):
            rgb = frame.to_ndarray(format="rgb24")[y : y + side, x : x + side]
            frames.append(cv2.resize(rgb, (SIZE, SIZE), interpolation=cv2.INTER_AREA))
    total = len(frames)
    if total < length:
        raise SystemExit(f"{REAL_VIDEO} has {total} frames, fewer than --frames {length}")
    starts = np.linspace(0, total - length, n_clips).round().astype(int)
    return [np.stack(frames[s : s + length]) for s in starts]


def synth_clips(n_clips: int, length: int, seed: int) -> list[np.ndarray]:
    """Moving-pattern clips: a drifting gradient background, a moving textured ellipse
    (a stand-in for a face) and mild sensor noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    clips = []
    for _ in range(n_clips):
        phase = rng.uniform(0, 2 * math.pi, 3)
        colour = rng.uniform(80, 200, 3)
        clip = np.empty((length, SIZE, SIZE, 3), np.uint8)
        for t in range(length):
            cx = SIZE / 2 + 20 * math.sin(0.07 * t + phase[0])
            cy = SIZE / 2 + 12 * math.cos(0.05 * t + phase[1])
            bg = 60 + 40 * np.sin((xx + 2 * t) / 23 + phase[2]) + 30 * yy / SIZE
            inside = ((xx - cx) / 45) ** 2 + ((yy - cy) / 58) ** 2 < 1
            texture = 25 * np.sin(xx / 3.0 + t / 5) * np.cos(yy / 4.0)
            img = np.repeat(bg[..., None], 3, axis=2)
            img[inside] = colour + texture[inside, None]
            img += rng.normal(0, 3, img.shape)
            clip[t] = np.clip(img, 0, 255).astype(np.uint8)
        clips.append(clip)
    return clips


# ------------------------------------------------------------------------------ encode / decode


def encode_clip(clip: np.ndarray, s: Setting) -> bytes:
    """Encode one (T, H, W, 3) uint8 RGB clip into an in-memory container."""
    buf = io.BytesIO()
    with av.open(buf, "w", format=s.container) as out:
        stream = out.add_stream(s.codec, rate=FPS, options=dict(s.options))
        stream.width, stream.height, stream.pix_fmt = clip.shape[2], clip.shape[1], s.pix_fmt
        stream.codec_context.thread_count = 1
        if s.qscale is not None:
            stream.codec_context.qmin = stream.codec_context.qmax = s.qscale
        for rgb in clip:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        out.mux(stream.encode())
    return buf.getvalue()


def pyav_decode(data: bytes) -> np.ndarray:
    with av.open(io.BytesIO(data)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def psnr(mse: float) -> float:
    return 10 * math.log10(255.0**2 / mse) if mse > 0 else float("inf")


def sample_starts(rng: np.random.Generator, n_frames: int, seq: int, stride: int, count: int) -> np.ndarray:
    """Random start so that the whole window fits when the clip is long enough (else 0)."""
    span = (seq - 1) * stride + 1
    return rng.integers(0, max(n_frames - span, 0) + 1, size=count)


def build_pipeline(
    encoded: list[bytes],
    n_frames: list[int],
    args,
    rng: np.random.Generator,
    record: list | None = None,
    fixed_start: int | None = None,
    pad_mode: str | None = None,
):
    """Synchronous DALI pipeline: external_source (encoded bytes + per-sample start frame)
    -> fn.decoders.video(start_frame, sequence_length, stride, pad_mode)."""
    arrays = [np.frombuffer(b, dtype=np.uint8) for b in encoded]
    cursor = [0]

    def next_batch():
        idx = [(cursor[0] + i) % len(arrays) for i in range(args.batch)]
        cursor[0] += args.batch
        if fixed_start is None:
            starts = [int(sample_starts(rng, n_frames[i], args.seq, args.stride, 1)[0]) for i in idx]
        else:
            starts = [fixed_start] * len(idx)
        if record is not None:
            record.append((idx, starts))
        return [arrays[i] for i in idx], [np.array(s, dtype=np.int32) for s in starts]

    @pipeline_def(
        batch_size=args.batch,
        num_threads=args.threads,
        device_id=0 if args.device == "mixed" else None,
        exec_async=False,
        exec_pipelined=False,
        prefetch_queue_depth=1,
        seed=args.seed,
    )
    def pipe():
        data, start = fn.external_source(source=next_batch, num_outputs=2, dtype=[types.UINT8, types.INT32])
        return fn.decoders.video(
            data, device=args.device, start_frame=start, sequence_length=args.seq, stride=args.stride, pad_mode=pad_mode or args.pad_mode
        )

    p = pipe()
    p.build()
    return p


def fetch(out) -> list[np.ndarray]:
    """TensorList (CPU or GPU) -> list of numpy arrays; for GPU this also synchronises."""
    if hasattr(out, "as_cpu"):
        out = out.as_cpu()
    return [np.asarray(out.at(i)) for i in range(len(out))]


def check_indices(s: Setting, n_frames: list[int], reference: list[np.ndarray], args) -> int:
    """Decode a few batches and verify that output frame j of a sample starting at ``start`` is
    frame start + j*stride: it must match the PyAV decode of that index better than the
    neighbouring indices. Returns the number of mismatching frames."""
    record: list = []
    p = build_pipeline(s.encoded, n_frames, args, np.random.default_rng(args.seed), record)
    errors = 0
    for _ in range(max(1, math.ceil(len(s.encoded) / args.batch))):
        (out,) = p.run()
        idx, starts = record[-1]
        for clip_i, start, frames in zip(idx, starts, fetch(out)):
            ref = reference[clip_i]
            for j, frame in enumerate(frames):
                want = min(start + j * args.stride, len(ref) - 1)  # edge padding repeats the last frame
                cands = [k for k in (want - 1, want, want + 1) if 0 <= k < len(ref)]
                mae = {k: np.abs(frame.astype(np.int16) - ref[k]).mean() for k in cands}
                errors += min(mae, key=mae.get) != want
    del p
    return errors


# ----------------------------------------------------------------------------------------- probe


def dali_reason(err: Exception) -> str:
    """The informative line of a DALI pipeline error (the message ends with the C++ reason)."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    for ln in reversed(lines):
        if "not supported" in ln or "Assert" in ln or "rror" in ln:
            return ln[:200]
    return (lines[-1] if lines else type(err).__name__)[:200]


def probe(args, clip: np.ndarray, console: Console) -> None:
    """Which containers/codecs the DALI backend accepts, and pad_mode at the end of a clip."""
    candidates = [
        Setting("vp9/webm", "libvpx-vp9", "webm", "yuv420p", {"crf": "31", "b": "0", "deadline": "realtime"}),
        Setting("vp9/mkv", "libvpx-vp9", "matroska", "yuv420p", {"crf": "31", "b": "0", "deadline": "realtime"}),
        Setting("vp9/mp4", "libvpx-vp9", "mp4", "yuv420p", {"crf": "31", "b": "0", "deadline": "realtime"}),
        Setting("mjpeg/avi", "mjpeg", "avi", "yuvj420p", qscale=4),
        Setting("mjpeg/mkv", "mjpeg", "matroska", "yuvj420p", qscale=4),
        Setting("mjpeg/mov", "mjpeg", "mov", "yuvj420p", qscale=4),
        Setting("h264/mp4", "libx264", "mp4", "yuv420p", {"crf": "23", "preset": "veryfast"}),
    ]
    short = clip[:32]
    console.print(f"[bold]DALI {args.device} acceptance probe[/] (32-frame clip, start 0, 16 x stride 1):")
    for s in candidates:
        try:
            data = encode_clip(short, s)
        except Exception as e:  # encoder/muxer missing in this FFmpeg build
            console.print(f"  {s.name:10s} not encodable here: {type(e).__name__}: {str(e)[:100]}")
            continue
        try:
            probe_args = argparse.Namespace(**{**vars(args), "batch": 1, "stride": 1})
            p = build_pipeline([data], [len(short)], probe_args, np.random.default_rng(0), fixed_start=0)
            (out,) = p.run()
            console.print(f"  {s.name:10s} ok, output {fetch(out)[0].shape}")
            del p
        except Exception as e:
            console.print(f"  {s.name:10s} [red]refused[/]: {dali_reason(e)}")

    mj = Setting("mjpeg/avi", "mjpeg", "avi", "yuvj420p", qscale=4)
    data = encode_clip(short, mj)
    ref = pyav_decode(data)
    # From here only 2 frames fit, and the last sampled frame (start + stride) is not the last frame
    # of the clip, so "repeat the last sampled frame" and "repeat the last frame" can be told apart.
    start = len(short) - 2 * args.stride + 2
    console.print(
        f"[bold]pad_mode[/] (32-frame clip, start {start}, {args.seq} x stride {args.stride}): "
        "decoded frame indices as identified against the PyAV decode"
    )
    for mode in ("none", "constant", "edge", "reflect_101"):
        try:
            p = build_pipeline(
                [data], [len(short)], argparse.Namespace(**{**vars(args), "batch": 1}), np.random.default_rng(0), fixed_start=start, pad_mode=mode
            )
            (out,) = p.run()
            frames = fetch(out)[0]
            ids = []
            for f in frames:
                mae = np.abs(ref.astype(np.int16) - f).reshape(len(ref), -1).mean(1)
                ids.append(str(int(mae.argmin())) if mae.min() < 8 else ("0s" if f.max() == 0 else "?"))
            console.print(f"  {mode:12s} {len(frames):2d} frames: {' '.join(ids)}")
            del p
        except Exception as e:
            console.print(f"  {mode:12s} [red]error[/]: {dali_reason(e)}")


def seek_probe(args, settings: list[Setting], n_frames: list[int], console: Console) -> None:
    """Cost of decoding ONE frame at the start vs the end of a clip: if the decoder seeks (to
    the frame itself for intra-only MJPEG, to the previous keyframe for VP9) the two cost the
    same; if it decodes from the first frame, the cost grows with the frame index."""
    last = min(n_frames) - 1
    one = argparse.Namespace(**{**vars(args), "seq": 1, "stride": 1})
    console.print(
        f"[bold]seek probe[/]: ms per clip to decode 1 frame at index 0 / {last // 2} / {last} (batch {args.batch}, {args.threads} threads)"
    )
    for s in settings:
        cells = []
        for start in (0, last // 2, last):
            p = build_pipeline(s.encoded, n_frames, one, np.random.default_rng(0), fixed_start=start)
            p.run()
            times = []
            for _ in range(5):
                t0 = time.perf_counter()
                p.run()
                times.append(time.perf_counter() - t0)
            cells.append(f"{statistics.median(times) / args.batch * 1e3:.2f}")
            del p
        console.print(f"  {s.name:12s} {' / '.join(cells)} ms")


# ------------------------------------------------------------------------------------------ main


def int_list(text: str) -> list[int]:
    return [int(t) for t in text.split(",") if t]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=6, help="test clips (default 6)")
    ap.add_argument("--frames", type=int, default=64, help="frames per test clip (default 64)")
    ap.add_argument("--iters", type=int, default=20, help="timed DALI batches per setting (default 20)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed DALI batches per setting")
    ap.add_argument("--batch", type=int, default=8, help="clips per DALI batch (default 8)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2, help="DALI CPU threads")
    ap.add_argument("--seq", type=int, default=16, help="frames sampled per clip")
    ap.add_argument("--stride", type=int, default=4, help="stride between sampled frames")
    ap.add_argument("--pad-mode", default="edge", help="decoders.video pad_mode for short clips")
    ap.add_argument("--vp9-crf", type=int_list, default=[24, 31], help="comma list (default 24,31)")
    ap.add_argument("--vp9-gop", type=int, default=32, help="VP9 keyframe interval (g)")
    ap.add_argument("--vp9-cpu-used", type=int, default=4, help="libvpx speed (0 slow .. 8 fast)")
    ap.add_argument("--mjpeg-q", type=int_list, default=[3, 5], help="comma list, 2 best .. 31 (default 3,5)")
    ap.add_argument("--mjpeg-container", default="avi", choices=["avi", "matroska"])
    ap.add_argument("--device", default="cpu", choices=["cpu", "mixed"], help="DALI decoder backend")
    ap.add_argument("--synthetic", action="store_true", help="use numpy clips even if the fixture exists")
    ap.add_argument("--no-probe", action="store_true", help="skip the container / pad_mode probe")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    console = Console(width=max(Console().width, 150))

    real = REAL_VIDEO.exists() and not args.synthetic
    clips = load_real_clips(args.clips, args.frames) if real else synth_clips(args.clips, args.frames, args.seed)
    source = f"real face ({REAL_VIDEO.name}, crop {FACE_BOX})" if real else "synthetic moving pattern"
    n_frames = [len(c) for c in clips]
    console.print(f"{len(clips)} clips x {args.frames} frames, {SIZE}x{SIZE} RGB, {FPS} fps, source: {source}")

    settings = [
        Setting(
            f"VP9 crf {crf}",
            "libvpx-vp9",
            "webm",
            "yuv420p",
            {"crf": str(crf), "b": "0", "g": str(args.vp9_gop), "deadline": "good", "cpu-used": str(args.vp9_cpu_used), "row-mt": "1"},
        )
        for crf in args.vp9_crf
    ] + [Setting(f"MJPEG q {q}", "mjpeg", args.mjpeg_container, "yuvj420p", qscale=q) for q in args.mjpeg_q]

    # Encode (timed), then PSNR of the PyAV decode against the source.
    for s in settings:
        start = time.perf_counter()
        s.encoded = [encode_clip(c, s) for c in clips]
        s.encode_s = time.perf_counter() - start
        sq_err, count = 0.0, 0
        decoded = [pyav_decode(b) for b in s.encoded]
        for ref, dec in zip(clips, decoded):
            if dec.shape != ref.shape:
                raise SystemExit(f"{s.name}: decoded shape {dec.shape} != source {ref.shape}")
            sq_err += float(((dec.astype(np.float64) - ref) ** 2).sum())
            count += ref.size
        s.psnr = psnr(sq_err / count)
        s.index_errors = check_indices(s, n_frames, decoded, args)

    if not args.no_probe:
        probe(args, clips[0], console)
        seek_probe(args, settings, n_frames, console)

    # DALI decode timing, settings in alternation. The load average shows whether other work
    # shared the CPU (absolute numbers then drop; the alternation keeps the ratios fair).
    load_before = os.getloadavg()[0]
    pipes = {s.name: build_pipeline(s.encoded, n_frames, args, np.random.default_rng(args.seed)) for s in settings}
    for s in settings:
        for _ in range(args.warmup):
            fetch(pipes[s.name].run()[0])
    for _ in range(args.iters):
        for s in settings:
            start = time.perf_counter()
            (out,) = pipes[s.name].run()
            frames = fetch(out)
            s.decode_s.append(time.perf_counter() - start)
            assert len(frames) == args.batch and frames[0].shape[1:] == (SIZE, SIZE, 3)
    load_after = os.getloadavg()[0]

    title = (
        f"DALI fn.decoders.video ({args.device}, {args.threads} threads, batch {args.batch}): "
        f"{args.seq} frames x stride {args.stride} from a random start; {source}"
    )
    table = Table(title=title)
    for col in ("codec", "settings", "KiB/clip", "KiB/frame", "PSNR dB", "encode fps", "decode clips/s", "decode frames/s", "index check"):
        table.add_column(col)
    for s in settings:
        kib = statistics.mean(len(b) for b in s.encoded) / 1024
        per_batch = statistics.median(s.decode_s)
        clips_s = args.batch / per_batch
        table.add_row(
            s.name,
            s.describe(),
            f"{kib:.1f}",
            f"{kib / args.frames:.2f}",
            f"{s.psnr:.2f}",
            f"{sum(n_frames) / s.encode_s:.0f}",
            f"{clips_s:.1f}",
            f"{clips_s * args.seq:.0f}",
            "ok" if s.index_errors == 0 else f"[red]{s.index_errors} wrong frames[/]",
        )
    console.print(table)
    console.print(
        "encode fps: single-threaded PyAV encode + mux in memory; decode: median over "
        f"{args.iters} batches per setting, timed in alternation (output frames/s = clips/s x {args.seq}); "
        f"1-min load average {load_before:.2f} before / {load_after:.2f} after timing "
        f"on {os.cpu_count()} CPUs"
    )
    cmd = (
        f"python benchmarks/bench_codec.py --clips {args.clips} --frames {args.frames} --iters {args.iters} "
        f"--batch {args.batch} --threads {args.threads} --vp9-crf {','.join(map(str, args.vp9_crf))} "
        f"--vp9-gop {args.vp9_gop} --mjpeg-q {','.join(map(str, args.mjpeg_q))} --device {args.device}"
        + (" --synthetic" if args.synthetic else "")
        + (" --no-probe" if args.no_probe else "")
    )
    console.print(f"command: {cmd}")


if __name__ == "__main__":
    main()
