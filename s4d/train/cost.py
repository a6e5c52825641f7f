"""What a run costs, counted: parameters (all of them, and those one test sample uses) and the
FLOPs of training (forward + backward of one step of each batch kind, times the steps).

FLOPs come from ``torch.utils.flop_counter.FlopCounterMode`` run on a model built under
``FakeTensorMode`` (no memory, no arithmetic: a base model counts in about a second on a CPU),
with bf16 autocast as training on a GPU runs. The counter knows matmuls, convolutions and the
GPU attention kernels; three ops it does not know are added here with formulas of the same
kind (2 x multiply-adds), through its ``custom_mapping``:

- ``aten._grouped_mm`` (the experts of MoE/MoAE layers): 2 x rows x in x out summed over the
  groups, so only the S = tokens x top-k routed rows count, k/E of a dense pass over E experts;
- ``aten._scaled_dot_product_flash_attention_for_cpu`` and its backward (the CPU attention
  kernel the fake model dispatches to): torch's own SDPA formulas.

Norms, activations, softmax and the optimiser step are not counted (nor by the paper's tools).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn
from torch.utils import flop_counter
from torch.utils.flop_counter import FlopCounterMode

from ..models import Classifier, MAEConfig, ModelConfig, PretrainMAE
from ..models.moe import MixtureOfExperts

COUNTED = "one step of each batch kind x steps"
aten = torch.ops.aten


def param_counts(model: nn.Module, task: str = "video") -> dict[str, int]:
    """``params_train``: every parameter; ``params_test``: those one sample of ``task`` uses at
    test: its own head only, top-k of the E experts of every mixture layer, no MAE decoder."""
    total = sum(p.numel() for p in model.parameters())
    unused = 0.0
    if isinstance(model, Classifier):
        unused += sum(p.numel() for name, head in model.head.items() if name != task for p in head.parameters())
    if isinstance(model, PretrainMAE):
        unused += sum(p.numel() for p in (*model.decoder.parameters(), *model.encoder_to_decoder.parameters(), model.mask_token))
    for m in model.modules():
        if isinstance(m, MixtureOfExperts):
            unused += sum(p.numel() for p in m.experts.parameters()) * (m.num_experts - m.top_k) / m.num_experts
    return {"params_train": int(total), "params_test": int(round(total - unused))}


def _grouped_mm_flop(a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
    """``_grouped_mm(a, b, offs)``: every (2-D) side is cut into groups along its shared or row
    dimension, so the sum over groups is one product of the full sizes."""
    if len(a_shape) == 2 and len(b_shape) == 3:  # (S, K) x (E, K, N) -> (S, N): the forward
        return 2 * a_shape[0] * a_shape[1] * b_shape[2]
    if len(a_shape) == 2 and len(b_shape) == 2:  # (M, S) x (S, N) -> (E, M, N): a weight's gradient
        return 2 * a_shape[0] * a_shape[1] * b_shape[1]
    if len(a_shape) == 3 and len(b_shape) == 2:  # (E, M, K) x (K, S) -> (M, S)
        return 2 * a_shape[1] * a_shape[2] * b_shape[1]
    return 2 * a_shape[0] * a_shape[1] * a_shape[2] * b_shape[2]  # (E, M, K) x (E, K, N): a batched matmul


def _cpu_sdpa_flop(q_shape, k_shape, v_shape, *args, out_shape=None, **kwargs) -> int:
    return flop_counter.sdpa_flop_count(q_shape, k_shape, v_shape)


def _cpu_sdpa_backward_flop(grad_shape, q_shape, k_shape, v_shape, *args, out_shape=None, **kwargs) -> int:
    return flop_counter.sdpa_backward_flop_count(grad_shape, q_shape, k_shape, v_shape)


FLOP_FORMULAS = {
    aten._grouped_mm: _grouped_mm_flop,
    aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flop,
    aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_sdpa_backward_flop,
}


def count_flops(
    build: Callable[[], nn.Module], x_shape: tuple[int, ...], loss: Callable[[nn.Module, torch.Tensor], torch.Tensor], backward: bool = True
) -> int:
    """FLOPs of one training step, forward + backward (``backward`` False: forward only):
    ``loss(build(), x)`` with x of ``x_shape`` ((B,3,T,H,W) or (B,3,H,W)), all on fake tensors
    under bf16 autocast."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode(allow_non_fake_inputs=True):
        model = build().train()
        x = torch.empty(x_shape)
        with FlopCounterMode(display=False, custom_mapping=FLOP_FORMULAS) as counter:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                value = loss(model, x)
            if backward:
                value.float().backward()
    return int(counter.get_total_flops())


def classifier_step_flops(config: ModelConfig, batch: int, task: str) -> int:
    """One fine-tuning step of ``batch`` clips (task video) or images (any other task)."""
    enc = config.encoder
    shape = (
        (batch, enc.in_chans, enc.num_frames, enc.img_size, enc.img_size) if task == "video" else (batch, enc.in_chans, enc.img_size, enc.img_size)
    )
    return count_flops(lambda: Classifier(config), shape, lambda m, x: m(x, task).sum())


def mae_step_flops(config: MAEConfig, batch: int, modality: str, frames: int | None = None) -> int:
    """One pre-training step: ``batch`` masked clips (``modality`` video, ``frames`` each) or
    images; only the visible tokens (5% of a clip, 10% of an image) pass the encoder."""
    enc = config.encoder
    side = (enc.img_size, enc.img_size)
    shape = (batch, enc.in_chans, frames or enc.num_frames, *side) if modality == "video" else (batch, enc.in_chans, *side)
    return count_flops(lambda: PretrainMAE(config), shape, lambda m, x: m(x).loss)


def total_cost(step_flops: dict[str, int], steps: dict[str, int], params: dict[str, int]) -> dict[str, Any]:
    """The ``cost`` record of a summary: sum over batch kinds of FLOPs per step x steps (all
    ranks, all epochs), in TFLOPs, with the parameter counts."""
    total = sum(step_flops[k] * steps.get(k, 0) for k in step_flops)
    return {
        "tflops": total / 1e12,
        **params,
        "counted": COUNTED,
        "per_step_gflops": {k: v / 1e9 for k, v in step_flops.items()},
        "steps": {k: int(steps.get(k, 0)) for k in step_flops},
    }


def finetune_cost(run) -> dict[str, Any]:
    """A ``finetune.Run``'s training cost: its schedule's video and image batches per epoch (every
    rank), times epochs, each at the FLOPs of one step of that kind."""
    cfg, world = run.cfg, run.dist.world
    kinds = run.joint.schedule(0) if run.joint is not None else ["video"] * len(run.video.batches(0))
    batch = {"video": cfg.video_batch, "image": cfg.image_batch}
    flops = {k: classifier_step_flops(run.model.config, batch[k], k) for k in sorted(set(kinds))}
    steps = {k: kinds.count(k) * world * cfg.epochs for k in flops}
    return total_cost(flops, steps, param_counts(run.model, "video"))


def safely(count: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """A finished run's summary is written even if counting fails (a model the counter cannot
    trace): the reason is recorded instead of the numbers."""
    try:
        return count()
    except Exception as e:  # noqa: BLE001 -- the cost is a side record; the run's results come first
        return {"tflops": None, "counted": f"not counted: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}


def sum_costs(costs: list[dict[str, Any]]) -> dict[str, Any]:
    """Several runs' costs (the folds of ``s4d cv``) added; parameters are the first run's."""
    if not costs or any(c.get("tflops") is None for c in costs):
        return {"tflops": None, "counted": "not counted: a fold has no cost record"}
    first = costs[0]
    return {
        "tflops": sum(c["tflops"] for c in costs),
        "params_train": first.get("params_train"),
        "params_test": first.get("params_test"),
        "counted": f"{COUNTED}, summed over {len(costs)} folds",
    }


def mae_cost(mae: MAEConfig, cfg, streams: list, counts: dict[str, int], world: int = 1) -> dict[str, Any]:
    """Pre-training's cost: each stream's batches per epoch and process (``counts``, by stream
    name) x ranks x epochs, a video step holding ``video_batch`` x views clips, an image or frames
    step ``image_batch`` stills; parameters are the MAE's (test: its encoder)."""
    flops, steps = {}, {}
    for s in streams:
        if not counts.get(s.name):
            continue
        if s.kind == "video":
            kind, batch = f"video x{s.source.repeat} views", cfg.video_batch * s.source.repeat
            step = mae_step_flops(mae, batch, "video", s.manifest.clip.frames if s.manifest.clip else None)
        else:
            kind, step = "image", mae_step_flops(mae, cfg.image_batch, "image")
        flops[kind] = step
        steps[kind] = steps.get(kind, 0) + counts[s.name] * world * cfg.epochs
    with torch.device("meta"):
        params = param_counts(PretrainMAE(mae))
    return total_cost(flops, steps, params)


def source_samples(m, data_root: str | None) -> tuple[int, str]:
    """Training samples of a mixture source and where the number came from: the shard index
    (preprocessed), else the manifest's ``expected`` counts (the release's published size)."""
    from pipelines import open_dataset
    from preprocess.errors import InputError

    folder = m.shard_dir(data_root)
    if (folder / "index.parquet").is_file():
        return len(open_dataset(m, folder, None, "train")), "shard index"
    fold = m.folds[m.fold_name(None)]
    if fold.train and all(p in m.expected for p in fold.train):
        return sum(m.expected[p] for p in fold.train), "manifest expected counts"
    raise InputError(f"{m.source or m.name}: no shards in {folder} and no `expected` counts for partitions {list(fold.train)}: cannot size it")


def estimate_pretrain(cfg) -> str:
    """The TFLOPs a full ``s4d pretrain`` run of ``cfg`` will cost, before running it (one process;
    the total does not depend on the number of ranks, up to rounding of batches): per stream one
    pass = ceil(samples / batch) batches, x share (the image share replacing it as in the run), x
    epochs, each at one counted step of its kind. Reads ``cfg.modality``/``cfg.image_share``."""
    from preprocess.mixture import load_mixture, select_streams

    from ..models import build_mae
    from .pretrain_data import check_clip_frames

    mixture = load_mixture(cfg.mixture)
    streams = select_streams(mixture, getattr(cfg, "modality", "both"), getattr(cfg, "image_share", None))
    with torch.device("meta"):
        mae = build_mae(cfg.size).config
    check_clip_frames(streams, cfg.size, mae.encoder.num_frames)
    counts, lines = {}, []
    for s in streams:
        n, origin = source_samples(s.manifest, cfg.data_root)
        batch = cfg.video_batch if s.kind == "video" else cfg.image_batch
        counts[s.name] = max(1, round(s.source.share * ceil_div(n, batch)))
        lines.append(f"  {s.name} ({s.kind}): {n:,} samples ({origin}), {counts[s.name]:,} batches of {batch} per epoch")
    cost = mae_cost(mae, cfg, streams, counts)
    per_step = ", ".join(f"{k} {v:,.0f} GFLOPs" for k, v in cost["per_step_gflops"].items())
    masks = f"masking {mae.mask_ratio_video:.0%} video / {mae.mask_ratio_image:.0%} image"
    params = f"parameters {cost['params_train'] / 1e6:.1f} M, encoder {cost['params_test'] / 1e6:.1f} M"
    return "\n".join(
        [
            f"pre-training cost estimate ({cfg.size}, {cfg.epochs} epochs, {masks}):",
            *lines,
            f"  one step (forward + backward): {per_step}",
            f"  total: {cost['tflops']:.3g} TFLOPs ({COUNTED}); {params}",
        ]
    )


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)
