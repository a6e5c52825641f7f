"""Scaling benchmark: how the S4D training step grows with frames (8/16/32) and resolution
(160/224), and fine-tuning throughput with 1 vs 2 DDP processes.

    python benchmarks/bench_scaling.py                     # small encoder on CPU (~3 min on 2 cores)
    python benchmarks/bench_scaling.py --size base --iters 5   # on a GPU

Input geometry: each setting is timed in alternation with the others (noise hits all alike) and
reported as seconds per sample, tokens, and its ratio to the paper's 16 x 160 px setting next to
the token ratio (attention makes time grow faster than tokens). DDP: the same per-process
batch with 1 process (all threads) and with 2 processes (threads split), gloo on the CPU even
where a GPU is present (multi-GPU scaling is a torchrun job of its own), reported as samples/s
and the 2-process / 1-process ratio.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import tempfile
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from rich.console import Console
from rich.table import Table

from s4d.models import Classifier, model_config

GEOMETRIES = [(8, 160), (16, 160), (32, 160), (16, 224)]


def build(size: str, frames: int, img: int) -> Classifier:
    cfg = model_config("s4d", size)
    enc = dataclasses.replace(cfg.encoder, num_frames=frames, img_size=img)
    return Classifier(dataclasses.replace(cfg, encoder=enc))


def step_fn(model: torch.nn.Module, batch: int, frames: int, img: int, device: torch.device):
    x = torch.randn(batch, 3, frames, img, img, device=device)
    y = torch.randint(0, 7, (batch,), device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    def step() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        with autocast:
            loss = torch.nn.functional.cross_entropy(model(x, task="video"), y)
        loss.backward()
        model.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t

    return step


def geometry_table(size: str, batch: int, iters: int, device: torch.device) -> Table:
    torch.manual_seed(0)
    steps = {}
    for frames, img in GEOMETRIES:
        model = build(size, frames, img).to(device).train()
        steps[(frames, img)] = step_fn(model, batch, frames, img, device)
        steps[(frames, img)]()  # warm-up
    times: dict[tuple[int, int], list[float]] = {g: [] for g in GEOMETRIES}
    for _ in range(iters):
        for g, step in steps.items():
            times[g].append(step() / batch)
    med = {g: statistics.median(ts) for g, ts in times.items()}
    tokens = {(f, i): (f // 2) * (i // 16) ** 2 for f, i in GEOMETRIES}
    base = (16, 160)
    table = Table(title=f"S4D ({size}) forward+backward per sample vs input geometry, batch {batch}, {describe(device)}")
    for col in ("frames x px", "tokens", "s/sample", "time ratio to 16x160", "token ratio"):
        table.add_column(col)
    for g in GEOMETRIES:
        table.add_row(f"{g[0]} x {g[1]}", str(tokens[g]), f"{med[g]:.4f}", f"{med[g] / med[base]:.2f}", f"{tokens[g] / tokens[base]:.2f}")
    return table


def ddp_worker(rank: int, world: int, size: str, batch: int, iters: int, threads: int, init: str, out: dict) -> None:
    torch.set_num_threads(threads)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    torch.manual_seed(0)
    model = torch.nn.parallel.DistributedDataParallel(build(size, 16, 160), find_unused_parameters=True)  # the image head idles
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch, 3, 16, 160, 160)
    y = torch.randint(0, 7, (batch,))

    def step() -> None:
        loss = torch.nn.functional.cross_entropy(model(x, task="video"), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()  # warm-up
    dist.barrier()
    t = time.perf_counter()
    for _ in range(iters):
        step()
    dist.barrier()
    if rank == 0:
        out[world] = world * batch * iters / (time.perf_counter() - t)
    dist.destroy_process_group()


def ddp_table(size: str, batch: int, iters: int) -> Table:
    cores = torch.get_num_threads()
    out = mp.Manager().dict()
    for world in (1, 2):
        with tempfile.TemporaryDirectory() as tmp:
            init = f"file://{os.path.join(tmp, 'rendezvous')}"
            mp.spawn(ddp_worker, args=(world, size, batch, iters, max(1, cores // world), init, out), nprocs=world, join=True)
    table = Table(title=f"DDP fine-tuning step (S4D {size}, 16 x 160 px, {batch} clip(s) per process, gloo, {cores} CPU threads in all)")
    for col in ("processes", "threads each", "samples/s", "ratio to 1 process"):
        table.add_column(col)
    for world in (1, 2):
        table.add_row(str(world), str(max(1, cores // world)), f"{out[world]:.3f}", f"{out[world] / out[1]:.2f}")
    return table


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="small", choices=["debug", "small", "base"])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--iters", type=int, default=2)
    ap.add_argument("--ddp-iters", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--no-ddp", action="store_true", help="skip the 1 vs 2 process comparison")
    args = ap.parse_args()
    console = Console()
    console.print(geometry_table(args.size, args.batch, args.iters, torch.device(args.device)))
    if not args.no_ddp:
        console.print(ddp_table(args.size, args.batch, args.ddp_iters))
    console.print(
        f"command: python benchmarks/bench_scaling.py --size {args.size} --batch {args.batch} --iters {args.iters} "
        f"--ddp-iters {args.ddp_iters}" + (" --no-ddp" if args.no_ddp else "")
    )


if __name__ == "__main__":
    main()
