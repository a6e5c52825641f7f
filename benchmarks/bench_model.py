"""Model step benchmark: forward + backward per sample; plain ViT vs S4D (MoAE) vs S4D executed
the way the reference code executes it, same weights, same inputs, same run.

    python benchmarks/bench_model.py                      # base size, whatever device is present
    python benchmarks/bench_model.py --size small --batch 2 --iters 5

"s4d-reference-style" is our S4D model with the reference's slow paths put back
(``benchmarks/reference_style.py``: materialised softmax attention, a per-expert Python loop
with ``nonzero``/``index_add_``); its logits are checked equal to ours before timing. All models
are timed in alternation (A B C A B C ...) so machine noise hits them alike; the figure
reported is the median per-sample time, the S4D / ViT ratio (MoAE overhead) and the
reference-style / S4D ratio (our speed-up). On a CUDA device the
step runs under bf16 autocast and the script also prints samples/s and MFU (model FLOPs
utilisation: analytic training FLOPs per sample x samples/s / the device's dense bf16 peak).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
from rich.console import Console
from rich.table import Table

from s4d.models import build_model

try:
    from reference_style import reference_style
except ImportError:  # run as a module from the repository root
    from benchmarks.reference_style import reference_style
from s4d.models.config import ModelConfig

# Dense bf16 tensor-core peaks (FLOP/s) by device name fragment, the first match wins: the PCIe
# and NVL H100s run lower clocks than the SXM part ("NVIDIA H100 80GB HBM3").
PEAK_BF16 = [("H100 PCIe", 756e12), ("H100 NVL", 835e12), ("H100", 989e12), ("H200", 989e12), ("A100", 312e12), ("L40S", 362e12)]


def peak_bf16(device_name: str) -> float | None:
    return next((v for k, v in PEAK_BF16 if k in device_name), None)


def train_flops_per_sample(cfg: ModelConfig, frames: int) -> float:
    """Analytic matmul FLOPs of forward + backward (3 x forward) for one clip; MoAE counts the
    top-k experts each token really runs, plus its router."""
    enc = cfg.encoder
    t, h, w = frames // enc.tubelet, enc.img_size // enc.patch, enc.img_size // enc.patch
    n, d = t * h * w, enc.dim
    hidden = int(d * enc.mlp_ratio)
    per_token = 4 * d * d + 2 * d * hidden + 2 * n * d  # qkv+proj, FFN, QK^T and AV (MACs)
    macs = enc.depth * n * per_token + n * enc.patch_pixels * d
    if cfg.moae is not None:
        m = cfg.moae
        macs += len(m.blocks) * n * (2 * d * m.num_experts + m.top_k * 2 * d * m.hidden_dim(d))
    return 3 * 2 * macs


def make_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device):
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    def step() -> None:
        with autocast:
            loss = torch.nn.functional.cross_entropy(model(x, task="video"), y)
        loss.backward()
        model.zero_grad(set_to_none=True)

    return step


def timed(step, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="base", choices=["debug", "small", "base"])
    ap.add_argument("--batch", type=int, default=None, help="clips per step (default: 1 on CPU, 16 on GPU)")
    ap.add_argument("--iters", type=int, default=None, help="timed steps per model (default: 3 on CPU, 20 on GPU)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--compile", action="store_true", help="torch.compile both models")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    batch = args.batch or (16 if gpu else 1)
    iters = args.iters or (20 if gpu else 3)

    torch.manual_seed(0)
    models = {name: build_model(name, args.size).to(device).train() for name in ("vit", "s4d")}
    models["s4d-reference-style"] = reference_style(models["s4d"])
    enc = models["vit"].config.encoder
    x = torch.randn(batch, 3, enc.num_frames, enc.img_size, enc.img_size, device=device)
    y = torch.randint(0, 7, (batch,), device=device)
    with torch.no_grad():  # same function, different execution (eval: no router noise)
        ours, ref = models["s4d"].eval()(x, task="video"), models["s4d-reference-style"].eval()(x, task="video")
        torch.testing.assert_close(ref.float(), ours.float(), atol=2e-3, rtol=2e-3)
    for model in models.values():
        model.train()
    steps = {}
    for name, model in models.items():
        steps[name] = make_step(torch.compile(model) if args.compile else model, x, y, device)
        for _ in range(args.warmup):
            timed(steps[name], device)
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(iters):
        for name in models:
            times[name].append(timed(steps[name], device) / batch)

    name_dev = torch.cuda.get_device_name(device) if gpu else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    peak = peak_bf16(name_dev) if gpu else None
    table = Table(title=f"forward+backward per sample, {args.size}, {enc.num_frames}x{enc.img_size}px, batch {batch}, {name_dev}")
    for col in ("model", "params (M)", "median s/sample", "samples/s", "MFU (bf16)"):
        table.add_column(col)
    med = {name: statistics.median(ts) for name, ts in times.items()}
    for name, model in models.items():
        flops = train_flops_per_sample(model.config, enc.num_frames)
        mfu = f"{flops / med[name] / peak:.1%}" if peak else "n/a"
        params = sum(p.numel() for p in model.parameters()) / 1e6
        table.add_row(name, f"{params:.1f}", f"{med[name]:.4f}", f"{1 / med[name]:.2f}", mfu)
    console = Console()
    console.print(table)
    console.print(
        f"S4D (MoAE) / plain ViT step-time ratio: {med['s4d'] / med['vit']:.3f} (MoAE overhead {med['s4d'] / med['vit'] - 1:+.1%}; target <= +10%)"
    )
    console.print(
        f"reference-style / S4D step-time ratio: {med['s4d-reference-style'] / med['s4d']:.3f} "
        f"(our speed-up over the reference's execution; target >= 2 on an H100)"
    )
    console.print(
        f"command: python benchmarks/bench_model.py --size {args.size} --batch {batch} --iters {iters}" + (" --compile" if args.compile else "")
    )


if __name__ == "__main__":
    main()
