"""Doctor checks of the environment and the compute path: versions, MoAE kernels, attention,
host syncs in the step loop, the process group, and short real fine-tuning and MAE runs."""

from __future__ import annotations

import ctypes.util
import importlib.metadata as md
import platform
import shutil
import subprocess
import warnings
from typing import Any

import torch

from .runner import Context, Skip


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def environment(ctx: Context) -> dict[str, Any]:
    dali = {name: _version(name) for name in ("nvidia-dali-cuda130", "nvidia-dali-cuda120", "nvidia-dali-cuda110")}
    detail: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch CUDA": torch.version.cuda,
        "DALI": next((f"{v} ({k})" for k, v in dali.items() if v), None),
        "facenet-pytorch": _version("facenet-pytorch"),
        "PyAV": _version("av"),
        "timm": _version("timm"),
        "libnvcuvid": ctypes.util.find_library("nvcuvid"),
        "CPU cores": len(__import__("os").sched_getaffinity(0)),
    }
    if ctx.cuda:
        props = torch.cuda.get_device_properties(ctx.device)
        detail.update({"GPU": props.name, "arch": f"sm_{props.major}{props.minor}", "GPU memory GiB": round(props.total_memory / 2**30, 1)})
        if shutil.which("nvidia-smi"):
            out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True)
            detail["driver"] = out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
        if detail["DALI"] and "cuda130" in detail["DALI"] and detail.get("driver") and int(detail["driver"].split(".")[0]) < 580:
            raise AssertionError(
                f"nvidia-dali-cuda130 needs driver >= 580 (this one: {detail['driver']}); pip install 's4d[cuda120]' instead (README)"
            )
    return detail


def moae_kernels(ctx: Context) -> dict[str, Any]:
    """The experts of one MoAE layer at base width: bf16 ``grouped_mm`` against fp32 on the same
    rows (one expert left without tokens), forward and backward; on a GPU the whole layer's bf16
    forward and backward with host syncs forbidden."""
    from ..models import MixtureOfExperts, MoEConfig, moe

    torch.manual_seed(0)
    layer = MixtureOfExperts(768, MoEConfig(noise="none")).to(ctx.device)
    if not moe._grouped_supported(torch.zeros(1, device=ctx.device, dtype=torch.bfloat16), 768, 192):
        raise AssertionError("grouped_mm is not available for bf16 here: MoAE would run every expert on every token")
    counts = torch.tensor([700, 0, 300, 500, 90, 410, 600, 536], device=ctx.device)  # expert 1 gets no tokens
    x = torch.randn(int(counts.sum()), 768, device=ctx.device).bfloat16().float()
    grads, outs = [], []
    for dtype in (torch.bfloat16, None):
        layer.zero_grad()
        with torch.autocast(ctx.device.type, dtype=dtype) if dtype else torch.autocast(ctx.device.type, enabled=False):
            y = layer.experts(x, counts)
        y.float().square().mean().backward()
        outs.append(y.detach().float())
        grads.append(layer.experts.w1.grad.clone())
    err = float((outs[0] - outs[1]).abs().max() / outs[1].abs().max())
    gerr = float((grads[0] - grads[1]).abs().max() / grads[1].abs().max())
    if err > 0.05 or gerr > 0.05 or grads[0][1].abs().max() > 0:
        raise AssertionError(
            f"bf16 grouped experts differ from fp32 by {err:.3f} (output) / {gerr:.3f} (grad), bounds 0.05; "
            f"idle expert grad {float(grads[0][1].abs().max()):.2g}"
        )
    synced = "not checked on CPU"
    if ctx.cuda:
        tokens = torch.randn(4, 392, 768, device=ctx.device)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                out, _ = layer(tokens)
            out.float().square().mean().backward()
        finally:
            torch.cuda.set_sync_debug_mode("default")
        synced = "none (forward and backward)"
    return {"relative error, output": round(err, 4), "relative error, expert grad": round(gerr, 4), "host syncs": synced}


def flash_attention(ctx: Context) -> dict[str, Any]:
    ctx.need_cuda()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from ..models.attention import Attention

    attn = Attention(768, 12).to(ctx.device)
    x = torch.randn(8, 800, 768, device=ctx.device)
    with torch.autocast("cuda", dtype=torch.bfloat16), sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        out = attn(x)
    ref = attn(x)
    err = float((out.float() - ref).abs().max() / ref.abs().max())
    if err > 0.05:
        raise AssertionError(f"flash attention differs from fp32 by {err:.3f}")
    return {"relative error to fp32": round(err, 4)}


def step_syncs(ctx: Context) -> dict[str, Any]:
    """Training steps of the real loop on device-resident batches, counting host syncs (on a
    GPU: torch's sync debug mode; expected: the end-of-epoch loss read and NaN check only)."""
    from pipelines.mixing import BatchMixer

    from ..models import build_model
    from ..train.loop import train_epoch

    size, frames, side = ("small", 16, 160) if ctx.cuda else ("debug", 4, 64)
    model = build_model("s4d", size, video_classes=4).to(ctx.device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    batches = [
        (
            "video",
            {
                "pixels": torch.randn(4, 3, frames, side, side, device=ctx.device),
                "labels": torch.randint(0, 4, (4,), device=ctx.device),
                "keys": [f"k{i}"],
            },
        )
        for i in range(6)
    ]
    mixers = {"video": BatchMixer(4, 0.8, 1.0, 0.1)}
    amp = torch.bfloat16 if ctx.cuda else None
    train_epoch(model, batches[:1], opt, mixers=mixers, device=ctx.device, autocast_dtype=amp)  # warm-up
    syncs = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if ctx.cuda:
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode("warn")
        try:
            stats, _ = train_epoch(model, batches, opt, mixers=mixers, device=ctx.device, autocast_dtype=amp, check_every=100)
        finally:
            if ctx.cuda:
                torch.cuda.set_sync_debug_mode("default")
    if ctx.cuda:
        syncs = sum("synchroniz" in str(w.message) for w in caught)
        if syncs > 3:
            raise AssertionError(f"{syncs} host syncs in {stats.steps} steps (expected at most 3, at the end of the epoch)")
    return {"model": size, "steps": stats.steps, "loss": round(stats.loss, 4), "host syncs": syncs if syncs is not None else "not counted on CPU"}


def process_group(ctx: Context) -> dict[str, Any]:
    """``dist.mean``/``barrier``/``gather`` on a one-process group of the backend a run uses
    (gloo for CPU tensors; with NCCL for CUDA tensors on a GPU)."""
    import torch.distributed as dist

    from ..runtime.dist import Dist, barrier, gather, mean, process_group_backend

    if dist.is_initialized():
        raise Skip("a process group is already running")
    backend = process_group_backend(ctx.cuda)
    dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1, device_id=ctx.device if ctx.cuda else None)
    try:
        d = Dist(0, 2, 0)  # "active": every call goes through the group (world_size 1 underneath)
        value = mean(3.0, d) * 2  # mean divides by d.world
        barrier(d)
        got = gather({"rank": 0}, Dist(0, 1, 0))
        if ctx.cuda:
            t = torch.ones(4, device=ctx.device)
            dist.all_reduce(t)
            torch.cuda.synchronize()
        if value != 3.0 or got != [{"rank": 0}]:
            raise AssertionError(f"mean gave {value / 2}, gather {got}")
    finally:
        dist.destroy_process_group()
    return {"backend": backend}


def short_runs(ctx: Context) -> dict[str, Any]:
    """One epoch of real joint fine-tuning and one of MAE pre-training on the doctor's shards
    (small size in bf16 on a GPU, debug size on a CPU); both checkpoints load back."""
    from ..checkpoint import load_model
    from ..models import Classifier, PretrainMAE
    from ..train.config import PretrainConfig, TrainConfig
    from ..train.finetune import train
    from ..train.optim import OptimConfig
    from ..train.pretrain import pretrain

    s = ctx.need("shards")
    size = "small" if ctx.cuda else "debug"
    device = str(ctx.device)
    quiet = lambda *_: None  # noqa: E731
    cfg = TrainConfig(
        manifest=str(s["video_path"]),
        out=str(ctx.root / "train"),
        size=size,
        epochs=1,
        video_batch=4,
        image_batch=4,
        data_root=str(s["data"]),
        device=device,
        optim=OptimConfig(warmup_epochs=0),
    )
    summary = train(cfg, log=quiet)
    mix = ctx.root / "mixture.json"
    mix.write_text(
        '{"name": "doctor", "sources": [{"manifest": "%s", "share": 1.0, "repeat": 2}, {"manifest": "%s", "share": 1.0}]}'
        % (s["video_path"], s["video_path"].with_name("demo_images.json"))
    )
    pre = PretrainConfig(
        mixture=str(mix), out=str(ctx.root / "pretrain"), size=size, epochs=1, video_batch=2, image_batch=4, data_root=str(s["data"]), device=device
    )
    pretrain(pre, log=quiet)
    clf = load_model(ctx.root / "train" / "checkpoints" / "last.safetensors")
    mae = load_model(ctx.root / "pretrain" / "checkpoints" / "last.safetensors")
    if not isinstance(clf, Classifier) or not isinstance(mae, PretrainMAE):
        raise AssertionError("the checkpoints did not load back as a classifier and an MAE")
    return {"model": size, "amp": "bf16" if ctx.cuda else "fp32", "fine-tune test UAR": round(summary["uar"], 3), "checkpoints": "written and loaded"}
