"""What DDP's ``find_unused_parameters=True`` costs per fine-tuning step (issue 22, finding 4).

Joint fine-tuning runs single-source batches, so one task head idles in every step. DDP can
either search the autograd graph after each forward for parameters that will get no gradient
(``find_unused_parameters=True``), or be told every parameter takes part, which holds when the
idle head is touched at zero weight (``s4d.train.finetune.IdleHeads``, what ``s4d train`` does:
``0 * p.sum()`` adds an exact zero gradient, dropped again before the optimizer step).

    python benchmarks/bench_ddp_unused.py                    # S4D small, 2 gloo processes (~2 min on 2 cores)
    python benchmarks/bench_ddp_unused.py --size debug --iters 20

Both variants live in the same two processes and are timed in alternation (noise hits both
alike), video and image batches alternating as in joint fine-tuning; each step is forward,
backward (with DDP's all-reduce) and an AdamW step. Printed: per variant the mean of its video
and image median step times, and their ratio. What the CPU cannot show: on a GPU the search
also makes DDP's reducer copy the all-reduced map of used parameters to the host in blocking
whenever a parameter is unused on a rank, i.e. a host sync in every single-source step.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import tempfile
import time
import warnings

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from s4d import build_model
from s4d.train.finetune import IdleHeads

SEARCHED, TOUCHED = "find_unused_parameters=True", "every head touched, find_unused_parameters=False"


def cross_entropy(model: torch.nn.Module, task: str, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(model(x, task=task), y)


def make_step(ddp: torch.nn.parallel.DistributedDataParallel, touch: bool, batches: dict[str, tuple]):
    opt = torch.optim.AdamW(ddp.parameters(), lr=1e-4)
    loss_fn = cross_entropy
    if touch:  # as s4d train: the idle head at zero weight, its zero gradient dropped before the step
        idle = IdleHeads(ddp.module.head)
        opt.register_step_pre_hook(idle.before_step)
        loss_fn = idle.touch(cross_entropy)

    def step(task: str) -> float:
        x, y = batches[task]
        t = time.perf_counter()
        loss = loss_fn(ddp, task, x, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - t

    return step


def worker(rank: int, world: int, size: str, iters: int, video_batch: int, image_batch: int, init: str, out: dict) -> None:
    warnings.simplefilter("ignore", FutureWarning)  # DDP's note on broadcast_buffers
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    torch.manual_seed(0)
    model = build_model("s4d", size, video_classes=7)
    enc = model.config.encoder
    g = torch.Generator().manual_seed(rank)
    batches = {
        "video": (
            torch.randn(video_batch, 3, enc.num_frames, enc.img_size, enc.img_size, generator=g),
            torch.randint(0, 7, (video_batch,), generator=g),
        ),
        "image": (torch.randn(image_batch, 3, enc.img_size, enc.img_size, generator=g), torch.randint(0, 7, (image_batch,), generator=g)),
    }
    ddp = torch.nn.parallel.DistributedDataParallel
    steps = {
        SEARCHED: make_step(ddp(model, find_unused_parameters=True, broadcast_buffers=False), False, batches),
        TOUCHED: make_step(ddp(copy.deepcopy(model), find_unused_parameters=False, broadcast_buffers=False), True, batches),
    }
    for step in steps.values():  # warm-up: one step of each task
        step("video"), step("image")
    times: dict[str, dict[str, list[float]]] = {k: {"video": [], "image": []} for k in steps}
    names = list(steps)
    for i in range(iters):
        for task in ("video", "image"):
            for name in names if i % 2 else names[::-1]:  # neither variant always runs first
                times[name][task].append(steps[name](task))
    if rank == 0:  # a video and an image step per pair: the mean of the two medians, and of the two minima
        out.update(
            {
                k: (statistics.mean(statistics.median(ts) for ts in v.values()), statistics.mean(min(ts) for ts in v.values()))
                for k, v in times.items()
            }
        )
    dist.destroy_process_group()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="small", choices=["debug", "small", "base"])
    ap.add_argument("--iters", type=int, default=6, help="timed video and image steps per variant")
    ap.add_argument("--video-batch", type=int, default=1)
    ap.add_argument("--image-batch", type=int, default=2)
    args = ap.parse_args()
    out = mp.Manager().dict()
    with tempfile.TemporaryDirectory() as tmp:
        init = f"file://{os.path.join(tmp, 'rendezvous')}"
        mp.spawn(worker, args=(2, args.size, args.iters, args.video_batch, args.image_batch, init, out), nprocs=2, join=True)
    (flag_med, flag_min), (touched_med, touched_min) = out[SEARCHED], out[TOUCHED]
    print(
        f"DDP step, S4D {args.size}, 2 gloo processes x 1 thread, video batch {args.video_batch} / image batch "
        f"{args.image_batch} alternating; mean of the video and image step times over {args.iters} each, median (min):"
    )
    print(f"  {SEARCHED}: {flag_med * 1e3:.1f} ms ({flag_min * 1e3:.1f})")
    print(f"  {TOUCHED}: {touched_med * 1e3:.1f} ms ({touched_min * 1e3:.1f})")
    print(f"ratio (searched / touched): {flag_med / touched_med:.3f} median, {flag_min / touched_min:.3f} min")
    print(
        f"command: python benchmarks/bench_ddp_unused.py --size {args.size} --iters {args.iters} "
        f"--video-batch {args.video_batch} --image-batch {args.image_batch}"
    )


if __name__ == "__main__":
    main()
