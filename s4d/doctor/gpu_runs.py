"""Doctor checks that only a GPU machine can run: MTCNN on CUDA against the CPU, DDP with two
processes (two GPUs), and the ``--compile`` training step. Each is skipped, with the reason,
where the hardware lacks it; the work itself is in functions a CPU test can drive too."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

import numpy as np
import torch

from .runner import Context, Skip


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def face_frames(count: int = 16, side: int = 320) -> np.ndarray:
    """(count, side, side, 3) drawn faces (the demo's generator; MTCNN finds them), 4 identities."""
    from ..demo.faces import draw_face, random_identity

    rng = np.random.default_rng(0)
    people = [random_identity(rng) for _ in range(4)]
    return np.stack(
        [draw_face(side, people[(k // 4) % 4], smile=(k % 4) / 3, open_=0.1, brow=0.0, frown=0.0, shift=(0.0, 0.0), rng=rng) for k in range(count)]
    )


def mtcnn_cuda(ctx: Context) -> dict[str, Any]:
    """Face detection on the GPU finds what it finds on the CPU (same faces, boxes within 5% of
    the face's side), and how fast."""
    ctx.need_cuda()
    try:
        import facenet_pytorch  # noqa: F401
    except ImportError:
        from preprocess.faces import FACENET_INSTALL

        raise Skip(f"facenet-pytorch is not installed ({FACENET_INSTALL})") from None
    from preprocess.faces import FaceDetector

    frames = face_frames()
    gpu = FaceDetector(device=str(ctx.device), batch_size=len(frames))
    gpu.detect_all(frames[:4])  # warm-up: weights on the device, kernels chosen
    _sync(ctx.device)
    t0 = time.perf_counter()
    on_gpu = gpu.detect_all(frames)
    _sync(ctx.device)
    seconds = time.perf_counter() - t0
    on_cpu = FaceDetector(device="cpu", batch_size=len(frames)).detect_all(frames)
    same_count = sum(len(a) == len(b) for a, b in zip(on_gpu, on_cpu))
    shift = max((max(abs(u - v) for u, v in zip(a[0].box, b[0].box)) / b[0].side for a, b in zip(on_gpu, on_cpu) if a and b), default=0.0)
    found = sum(bool(a) for a in on_gpu)
    if found < len(frames) // 2 or same_count < len(frames) - 2 or shift > 0.05:
        raise AssertionError(
            f"MTCNN on {ctx.device} found faces in {found} of {len(frames)} frames, the same count as the CPU in "
            f"{same_count}, boxes up to {100 * shift:.1f}% of the face apart (bounds: half, all but 2, 5%)"
        )
    return {
        "frames/s (320 px)": round(len(frames) / seconds, 1),
        "frames with a face": f"{found}/{len(frames)}",
        "same as the CPU": f"{same_count}/{len(frames)} frames, boxes within {100 * shift:.1f}%",
    }


def ddp_two_gpus(ctx: Context) -> dict[str, Any]:
    """``torchrun --nproc-per-node 2 -m s4d train``: one epoch of joint fine-tuning (``small``)
    on the doctor's shards, one GPU per process, the gloo + NCCL group."""
    ctx.need_cuda()
    n = torch.cuda.device_count()
    if n < 2:
        raise Skip(f"needs 2 CUDA devices, this machine has {n}")
    return ddp_train(ctx, "small")


def ddp_train(ctx: Context, size: str, timeout: float = 300) -> dict[str, Any]:
    """The two-process run itself (on whatever devices ``s4d train`` picks: a CPU test runs it
    with gloo); rank 0's metrics and checkpoint are read back."""
    s = ctx.need("shards")
    out = ctx.root / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "s4d",
        "train",
        "--manifest",
        str(s["video_path"]),
        "--size",
        size,
        "--epochs",
        "1",
        "--video-batch",
        "4",
        "--image-batch",
        "4",
        "--data-root",
        str(s["data"]),
        "--out",
        str(out),
        "--no-tensorboard",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    t0 = time.perf_counter()
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"2-process training did not finish in {timeout:.0f} s") from None
    seconds = time.perf_counter() - t0
    if res.returncode != 0:
        last = [x for x in res.stderr.splitlines() if x.strip()][-1:] or [f"exit {res.returncode}"]
        raise AssertionError(f"2-process training failed: {last[0][:250]}")
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
    if len(lines) != 1 or not (out / "checkpoints" / "last.safetensors").is_file():
        raise AssertionError(f"2-process training left {len(lines)} epoch lines and no checkpoint in {out}")
    return {"processes": 2, "model": size, "steps per process": lines[0].get("steps"), "seconds (with start-up)": round(seconds, 1)}


def compiled_step(ctx: Context) -> dict[str, Any]:
    """``--compile``: the training step of ``torch.compile(model)`` (Inductor, bf16) against the
    eager one: compile time, step times, graph breaks."""
    ctx.need_cuda()
    return compiled_steps(ctx.device)


def compiled_steps(device: torch.device, *, size: str = "debug", backend: str = "inductor", steps: int = 6) -> dict[str, Any]:
    from torch._dynamo.utils import counters

    from ..models import build_model
    from ..train.loop import train_epoch

    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    model = build_model("s4d", size, video_classes=4).to(device)
    enc = model.config.encoder
    batch = {
        "pixels": torch.randn(8, 3, enc.num_frames, enc.img_size, enc.img_size, device=device),
        "labels": torch.randint(0, 4, (8,), device=device),
        "keys": [],
    }
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    amp = torch.bfloat16 if device.type == "cuda" else None
    compiled = torch.compile(model, backend=backend)
    times = {}
    for name, net, n in (("compile", compiled, 2), ("compiled", compiled, steps), ("eager", model, 2), ("eager", model, steps)):
        _sync(device)
        t0 = time.perf_counter()
        stats, _ = train_epoch(net, [("video", batch)] * n, opt, device=device, autocast_dtype=amp)
        _sync(device)
        times[name] = time.perf_counter() - t0
        if not np.isfinite(stats.loss):
            raise AssertionError(f"{name} step: loss {stats.loss}")
    breaks = sum(counters["graph_break"].values())
    return {
        "model": size,
        "backend": backend,
        "compile seconds": round(times["compile"], 1),
        "step ms compiled": round(1000 * times["compiled"] / steps, 1),
        "step ms eager": round(1000 * times["eager"] / steps, 1),
        "graph breaks": breaks,
        "graphs": counters["stats"].get("unique_graphs", 0),
    }
