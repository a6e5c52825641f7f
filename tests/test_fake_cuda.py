"""Every GPU path on CUDA tensors faked on the CPU (``tests/fakecuda.py``): no crash, no host
sync inside a step, no constant uploaded per sample. Where the fake mode cannot see a bug
(memory layouts after advanced indexing), the GPU branch runs on real CPU tensors instead."""

from __future__ import annotations

import contextlib
import itertools
from unittest import mock

import numpy as np
import pytest
import torch

from pipelines import Augment, LoaderConfig
from pipelines.augment import BatchAugment, epoch_generator
from pipelines.augment_params import RandAugmentDraw
from pipelines.randaug import OPS, apply_op

from .fakecuda import CUDA, FakeCuda, backward, fake_cuda
from .media_factory import moving_square

LEVELS = (0.0, 5.0, 10.0)


def _cfg(views: int = 1, size: int = 32, **aug) -> LoaderConfig:
    return LoaderConfig(batch_size=2, size=size, frames=4, views=views, augment=Augment(**aug))


def _forced(ops: list[tuple[str, float]]):
    """RandAugment draws exactly ``ops`` (name, level), one per round, for every sample; signs
    alternate between samples."""

    def draw(spec, n, gen):
        idx = torch.tensor([OPS.index(name) for name, _ in ops]).repeat(n, 1)
        lv = torch.tensor([level for _, level in ops], dtype=torch.float64).repeat(n, 1)
        signs = torch.tensor([1.0 - 2 * (b % 2) for b in range(n)], dtype=torch.float64)[:, None].expand_as(lv)
        return RandAugmentDraw(idx, lv, signs.contiguous())

    return mock.patch("pipelines.augment.draw_randaugment", draw)


def _augment(cfg: LoaderConfig, video: bool, ops: list[tuple[str, float]] | None = None):
    """One batch through ``BatchAugment`` on fake CUDA; returns the output and the report."""

    def step():
        shape = (2, cfg.frames, 40, 48, 3) if video else (2, cfg.size, cfg.size, 3)
        # decoders hand over channels-last frames: (B, T, H, W, 3) contiguous
        batch = torch.empty(shape, dtype=torch.uint8, device=CUDA)
        return BatchAugment(cfg, video)(batch, epoch_generator(0, 0, 0))

    with _forced(ops) if ops is not None else contextlib.nullcontext():
        return fake_cuda(step)


@pytest.mark.parametrize("video,views", [(True, 1), (True, 4), (False, 1)], ids=["clip", "clip-4-views", "image"])
def test_every_randaugment_op_runs_on_the_gpu_without_a_sync_or_an_upload(video, views):
    cfg = _cfg(views=views, erase=1.0, flip=1.0, erase_mode="pixel" if video else "zero")
    for name, level in itertools.product(OPS, LEVELS):
        out, report = _augment(cfg, video, [(name, level)])
        assert report.error is None and not report.syncs, f"{name} m={level}:\n{report.summary()}"
        # the batch's arguments in one non-blocking copy; the (3,) normalisation scale and bias
        # once per BatchAugment and device; nothing per sample
        assert len(report.uploads) == 3 and report.uploads[0].detail.endswith("non_blocking"), f"{name} m={level}\n{report.summary()}"
        assert [u.detail for u in report.uploads[1:]] == ["(3,) float32"] * 2, f"{name} m={level}\n{report.summary()}"
        expect = (2, views, 3, 4, 32, 32) if views > 1 else ((2, 3, 4, 32, 32) if video else (2, 3, 32, 32))
        assert out.shape == expect and out.dtype == torch.float32 and out.device.type == "cuda", name


def test_the_default_recipes_run_batches_without_a_sync():
    """The recipe as drawn (no forcing), several batches: clips with pixel erasing, images with
    zero erasing, MAE's bicubic views."""
    for video, cfg in [
        (True, _cfg()),
        (False, _cfg(randaugment="rand-m9-n2-mstd0.5-inc1", erase_mode="zero")),
        (True, _cfg(views=4, randaugment=None, rrc_interpolation="bicubic", flip=0.0, erase=0.0)),
    ]:

        def step():
            aug = BatchAugment(cfg, video)
            gen = epoch_generator(1, 2, 0)
            shape = (2, cfg.frames, 40, 48, 3) if video else (2, cfg.size, cfg.size, 3)
            for _ in range(6):
                aug(torch.empty(shape, dtype=torch.uint8, device=CUDA), gen)

        _, report = fake_cuda(step)
        assert report.error is None and not report.syncs, report.summary()
        # one non-blocking copy of the arguments per batch; the normalisation constants once
        assert len(report.blocking_uploads) == 2 and all("(3,)" in u.detail for u in report.blocking_uploads), report.summary()
        assert len(report.uploads) == 6 + 2, report.summary()


def test_an_added_item_is_caught_with_its_line():
    """The utility sees what it claims to: a ``.item()`` slipped into an op fails the test above."""
    from pipelines import augment

    real = augment.apply_batched

    def with_item(x, p, packed):
        x.float().mean().item()
        return real(x, p, packed)

    with mock.patch("pipelines.augment.apply_batched", with_item):
        _, report = _augment(_cfg(), True, [("Invert", 5.0)])
    assert [e.op for e in report.syncs] == ["_local_scalar_dense"]
    assert report.syncs[0].where.startswith("pipelines/augment.py:")  # the project line that called it


def _gpu_branch():
    """The kernels' device branch on real CPU tensors."""
    return mock.patch("pipelines.augment_ops.host_path", lambda t: False)


def _real_frames(n: int, side: int = 48) -> torch.Tensor:
    """(n, 3, side, side) uint8 in the decoders' channels-last layout."""
    return torch.from_numpy(np.stack([moving_square(1, side, side, seed=s)[0] for s in range(n)])).permute(0, 3, 1, 2)


@pytest.mark.parametrize("first,second", list(itertools.product(OPS, OPS)))
def test_op_pairs_on_the_gpu_branch_with_real_tensors(first, second):
    """The GPU branch on real CPU tensors, in the layouts the decoders and flips produce (the
    fake mode returns contiguous layouts after indexing and cannot see a bad ``.view``), and
    against the OpenCV branch: image Equalize after a colour op crashed here."""
    frames = _real_frames(3)
    for x in (frames, frames[0], frames[0].flip(-1), frames.contiguous()):  # clip, image, flipped image, planar
        cpu = apply_op(apply_op(x, first, 6.0, -1.0), second, 6.0, 1.0)
        with _gpu_branch():
            gpu = apply_op(apply_op(x, first, 6.0, -1.0), second, 6.0, 1.0)
        assert gpu.shape == x.shape and gpu.dtype == torch.uint8
        diff = (cpu.int() - gpu.int()).abs().float()
        assert diff.mean() < 1.5, (first, second, tuple(x.stride()), diff.mean())


# ----------------------------------------------------------------------------- model and steps
VIDEO, IMAGE = (2, 3, 16, 160, 160), (2, 3, 160, 160)


def _built(factory):
    """A model built on the fake device, in the report's past (construction is not a step)."""
    with torch.device("cuda"):
        return factory()


def test_the_utility_sees_device_to_host_copies_and_pageable_uploads():
    def step():
        host = torch.empty(3)
        host.copy_(torch.ones(3, device=CUDA))  # waits for the device
        torch.zeros(4).to(CUDA, non_blocking=True)  # pageable: may wait
        torch.zeros(4).pin_memory().to(CUDA, non_blocking=True)  # asynchronous

    _, report = fake_cuda(step)
    assert report.error is None and [e.detail for e in report.syncs] == ["device-to-host copy"], report.summary()
    assert [u.detail for u in report.uploads] == ["(4,) float32 pageable, may wait", "(4,) float32 pinned non_blocking"]
    assert len(report.blocking_uploads) == 1


def test_the_python_backward_equals_autograd_on_real_tensors():
    """``fakecuda.backward`` is only worth its tests if it computes what the engine computes."""
    from s4d.models import build_model

    torch.manual_seed(0)
    model = build_model("s4d", size="debug").eval()
    enc = model.config.encoder
    x = torch.randn(2, 3, enc.num_frames, enc.img_size, enc.img_size)
    model(x, task="video").logsumexp(-1).mean().backward()
    expected = {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    backward(model(x, task="video").logsumexp(-1).mean())
    for n, p in model.named_parameters():
        assert (p.grad is None) == (expected[n] is None), n
        if p.grad is not None:
            torch.testing.assert_close(p.grad, expected[n], rtol=1e-5, atol=1e-6, msg=n)
            assert not p.grad.requires_grad and p.grad.stride() == p.stride(), n  # as the engine leaves them
    w = torch.zeros(3, 4, requires_grad=True)
    backward((w * 2).sum() + 0.0 * w.sum())  # IdleHeads' zero-weight touch: an expanded gradient
    assert w.grad.stride() == (4, 1) and torch.equal(w.grad, torch.full((3, 4), 2.0))
    torch.nn.utils.clip_grad_norm_([w], 0.1, foreach=True)  # in place on the gradient


@pytest.mark.parametrize("variant", ["s4d", "vit", "vit-mtl", "vit-moe"])
def test_every_variant_trains_in_bf16_on_the_gpu_without_a_sync(variant):
    """Forward + backward of both tasks under bf16 autocast at base size; the MoAE takes the
    grouped-matmul kernel that CUDA + bf16 selects."""
    from s4d.models import build_model
    from s4d.runtime import autocast

    grouped = []
    real_grouped = torch.nn.functional.grouped_mm

    def counting(*a, **k):
        grouped.append(a[0].dtype)
        return real_grouped(*a, **k)

    with FakeCuda() as fc, mock.patch("torch.nn.functional.grouped_mm", counting):
        model = fc.run(lambda: _built(lambda: build_model(variant, size="base")))
        fc.report.clear()

        def step():
            for task in model.config.heads:
                with autocast(CUDA, torch.bfloat16):
                    logits, aux = model(torch.empty(VIDEO if task == "video" else IMAGE, device=CUDA), task=task, return_aux=True)
                    loss = logits.float().logsumexp(-1).mean() + aux.balance_loss
                assert logits.dtype == torch.bfloat16
                backward(loss)
            return [n for n, p in model.named_parameters() if p.grad is None or p.grad.dtype != torch.float32]

        missing = fc.run(step)
    assert fc.report.error is None and not fc.report.syncs and not fc.report.uploads, fc.report.summary()
    moe = model.config.moae or model.config.moe_ffn
    moae_layers = len(moe.blocks) if moe else 0
    assert len(grouped) == 2 * moae_layers * len(model.config.heads) and set(grouped) <= {torch.bfloat16}
    heads = {t: [n for n in (missing or []) if f"head.{t}" in n] for t in model.config.heads}
    assert missing == [] or all(heads.values()), missing  # only the idle task's head may lack a gradient


@pytest.mark.parametrize("shape", [VIDEO, IMAGE], ids=["video", "image"])
def test_the_mae_step_runs_on_the_gpu_without_a_sync(shape):
    from s4d.models import build_mae
    from s4d.runtime import autocast

    with FakeCuda() as fc:
        model = fc.run(lambda: _built(lambda: build_mae(size="base")))
        fc.report.clear()

        def step():
            with autocast(CUDA, torch.bfloat16):
                out = model(torch.empty(shape, device=CUDA))
            backward(out.loss)
            return out.loss

        loss = fc.run(step)
    assert fc.report.error is None and not fc.report.syncs and not fc.report.uploads, fc.report.summary()
    assert loss.shape == () and loss.dtype == torch.float32


def _loader_batches(n: int, tasks=("video", "image"), views: int = 1):
    """Batches as the loaders hand them over on a GPU: pixels and labels on the device (the
    loader's ``CopyGuard`` moved them), keys on the host."""
    for i in range(n):
        task = tasks[i % len(tasks)]
        shape = ((2, views, 3, 16, 160, 160) if views > 1 else VIDEO) if task == "video" else IMAGE
        yield task, {"pixels": torch.empty(shape, device=CUDA), "labels": torch.ones(2, dtype=torch.int64, device=CUDA), "keys": [f"k{i}a", f"k{i}b"]}


def _no_bad_batch(t: torch.Tensor):
    """What the NaN check reads back: -1, no bad batch (the loss's sum: 0.0)."""
    return -1 if t.dtype == torch.int64 else 0.0


@pytest.mark.parametrize("accum", [1, 2])
def test_train_epoch_syncs_only_at_its_checks(accum):
    """26 batches of ``train_epoch`` as fine-tuning runs it (mixup/cutmix, label smoothing, the
    MoAE, AdamW with layer decay, the per-step cosine, accumulation): the deferred NaN check
    reads the device once per 25 batches and at the end, the epoch's mean loss once; nothing
    else waits, and nothing is uploaded (the loader's batches are on the device already)."""
    from pipelines.mixing import BatchMixer
    from s4d.models import build_model
    from s4d.train.loop import train_epoch
    from s4d.train.optim import OptimConfig, build_optimizer, build_scheduler

    with FakeCuda(scalar=_no_bad_batch) as fc, mock.patch.object(torch.Tensor, "backward", lambda self, *a, **k: backward(self)):
        model = fc.run(lambda: _built(lambda: build_model("s4d", size="base")))
        optimizer = build_optimizer(model, OptimConfig(), global_batch=32)
        scheduler = build_scheduler(optimizer, OptimConfig(warmup_epochs=0.5), epochs=2, steps_per_epoch=26 // accum)
        mixers = {t: BatchMixer(n) for t, n in model.config.heads.items()}
        fc.report.clear()
        out = fc.run(
            lambda: train_epoch(
                model, _loader_batches(26), optimizer, scheduler, mixers=mixers, device=CUDA, autocast_dtype=torch.bfloat16, accum=accum
            )
        )
    assert fc.report.error is None, fc.report.summary()
    assert out[1] == 26 // accum  # optimiser steps
    checks = [e for e in fc.report.syncs if "in check" in e.where]
    assert len(checks) == 2 and len(fc.report.syncs) == 3, fc.report.summary()  # batch 25, the end; the mean loss
    assert not fc.report.uploads, fc.report.summary()
    assert all(p.device.type == "cuda" for g in optimizer.state.values() for p in g.values() if torch.is_tensor(p) and p.dim())


def test_mae_epoch_with_views_syncs_only_at_its_checks():
    from s4d.models import build_mae
    from s4d.train.loop import mae_loss, train_epoch
    from s4d.train.optim import OptimConfig, build_mae_optimizer

    with FakeCuda(scalar=_no_bad_batch) as fc, mock.patch.object(torch.Tensor, "backward", lambda self, *a, **k: backward(self)):
        model = fc.run(lambda: _built(lambda: build_mae(size="base")))
        optimizer = build_mae_optimizer(model, OptimConfig(betas=(0.9, 0.95)), global_batch=32)
        fc.report.clear()
        fc.run(lambda: train_epoch(model, _loader_batches(4, views=4), optimizer, loss_fn=mae_loss, device=CUDA, autocast_dtype=torch.bfloat16))
    assert fc.report.error is None and len(fc.report.syncs) == 2, fc.report.summary()  # the end check, the mean loss


def test_eval_and_predict_wait_once_for_their_answer():
    """Evaluation keeps the probabilities on the device until the pass ends; predict's heads
    wait once per batch (for the answer). Host batches go up pinned and non-blocking."""
    from s4d.eval.protocol import predict
    from s4d.infer.heads import TorchHeads
    from s4d.models import build_model

    with FakeCuda() as fc:
        model = fc.run(lambda: _built(lambda: build_model("s4d", size="base")))
        fc.report.clear()
        batches = [
            {"pixels": torch.zeros(2, 2, *VIDEO[1:]), "labels": torch.tensor([0, 1]), "keys": [f"v{i}", f"w{i}"]} for i in range(5)
        ]  # host batches, two clips per video
        out = fc.run(lambda: predict(model, batches, "video", device=CUDA, autocast_dtype=torch.bfloat16))
        assert fc.report.error is None and out["probs"].shape == (10, 7), fc.report.summary()
        assert len(fc.report.syncs) == 1 and len(fc.report.uploads) == 5 and not fc.report.blocking_uploads, fc.report.summary()

        heads = TorchHeads.__new__(TorchHeads)  # the checkpoint-free part: the model on the device
        heads.model, heads.device, heads.amp, heads.source = model.eval(), CUDA, torch.bfloat16, "model.safetensors"
        fc.report.clear()
        probs = fc.run(lambda: heads.probs(torch.zeros(3, *VIDEO[1:]), "video"))
    assert fc.report.error is None and probs.shape == (3, 7), fc.report.summary()
    assert len(fc.report.syncs) == 1 and len(fc.report.uploads) == 1 and not fc.report.blocking_uploads, fc.report.summary()


def test_fp32_moae_on_the_gpu_reads_its_counts_once_per_layer():
    """``--amp off``: ``grouped_mm`` takes only bf16 on CUDA, so the fp32 experts run sparse,
    one host read of the per-expert counts per MoAE layer (the named, expected syncs)."""
    from s4d.models import build_model

    # fake tensors answer .tolist() element by element (a GPU: one copy): each count reads as
    # B*N*K / E rows, so the split adds up
    with FakeCuda(scalar=lambda t: 2 * 800 * 2 // 8) as fc:
        model = fc.run(lambda: _built(lambda: build_model("s4d", size="base")))
        fc.report.clear()
        fc.run(lambda: model(torch.empty(VIDEO, device=CUDA), task="video"))
    assert fc.report.error is None and not fc.report.uploads, fc.report.summary()
    E, layers = model.config.moae.num_experts, len(model.config.moae.blocks)
    assert len(fc.report.syncs) == E * layers and len({e.where for e in fc.report.syncs}) == 1, fc.report.summary()
    assert fc.report.syncs[0].where.startswith("s4d/models/moe.py:")
