"""Every GPU path on CUDA tensors faked on the CPU (``tests/fakecuda.py``): no crash, no host
sync inside a step, no constant uploaded per sample. Where the fake mode cannot see a bug
(memory layouts after advanced indexing), the GPU branch runs on real CPU tensors instead."""

from __future__ import annotations

import itertools
from unittest import mock

import numpy as np
import pytest
import torch

from pipelines import Augment, LoaderConfig
from pipelines.augment import BatchAugment, epoch_generator
from pipelines.randaug import OPS, RandAugment, apply_op

from .fakecuda import CUDA, FakeCuda, backward, fake_cuda
from .media_factory import moving_square

LEVELS = (0.0, 5.0, 10.0)


def _cfg(views: int = 1, size: int = 32, **aug) -> LoaderConfig:
    return LoaderConfig(batch_size=2, size=size, frames=4, views=views, augment=Augment(**aug))


def _forced(ops: list[tuple[str, float]]):
    """RandAugment draws exactly ``ops`` (name, level) for every sample."""
    return mock.patch.object(RandAugment, "draw", lambda self, gen: list(ops))


def _augment(cfg: LoaderConfig, video: bool, ops: list[tuple[str, float]] | None = None):
    """One batch through ``BatchAugment`` on fake CUDA; returns the output and the report."""
    def step():
        shape = (2, cfg.frames, 40, 48, 3) if video else (2, cfg.size, cfg.size, 3)
        # decoders hand over channels-last frames: (B, T, H, W, 3) contiguous
        batch = torch.empty(shape, dtype=torch.uint8, device=CUDA)
        return BatchAugment(cfg, video)(batch, epoch_generator(0, 0, 0))

    with _forced(ops) if ops is not None else mock.patch.object(RandAugment, "draw", RandAugment.draw):
        return fake_cuda(step)


@pytest.mark.parametrize("video,views", [(True, 1), (True, 4), (False, 1)], ids=["clip", "clip-4-views", "image"])
def test_every_randaugment_op_runs_on_the_gpu_without_a_sync_or_an_upload(video, views):
    cfg = _cfg(views=views, erase=1.0, flip=1.0, erase_mode="pixel" if video else "zero")
    for name, level in itertools.product(OPS, LEVELS):
        out, report = _augment(cfg, video, [(name, level)])
        assert report.error is None and not report.syncs, f"{name} m={level}:\n{report.summary()}"
        # the (3,) normalisation scale and bias, once per BatchAugment and device; nothing per sample
        assert [u.detail for u in report.uploads] == ["(3,) float32"] * 2, f"{name} m={level}: uploads\n{report.summary()}"
        expect = (2, views, 3, 4, 32, 32) if views > 1 else ((2, 3, 4, 32, 32) if video else (2, 3, 32, 32))
        assert out.shape == expect and out.dtype == torch.float32 and out.device.type == "cuda", name


def test_the_default_recipes_run_batches_without_a_sync():
    """The recipe as drawn (no forcing), several batches: clips with pixel erasing, images with
    zero erasing, MAE's bicubic views."""
    for video, cfg in [(True, _cfg()), (False, _cfg(randaugment="rand-m9-n2-mstd0.5-inc1", erase_mode="zero")),
                       (True, _cfg(views=4, randaugment=None, rrc_interpolation="bicubic", flip=0.0, erase=0.0))]:
        def step():
            aug = BatchAugment(cfg, video)
            gen = epoch_generator(1, 2, 0)
            shape = (2, cfg.frames, 40, 48, 3) if video else (2, cfg.size, cfg.size, 3)
            for _ in range(6):
                aug(torch.empty(shape, dtype=torch.uint8, device=CUDA), gen)

        _, report = fake_cuda(step)
        assert report.error is None and not report.syncs, report.summary()
        # the normalisation constants, once per device for the whole run
        assert len(report.uploads) <= 2 and all("(3,)" in u.detail for u in report.uploads), report.summary()


def test_an_added_item_is_caught_with_its_line():
    """The utility sees what it claims to: a ``.item()`` slipped into an op fails the test above."""
    real = apply_op

    def with_item(x, name, level, gen):
        x.float().mean().item()
        return real(x, name, level, gen)

    with mock.patch("pipelines.randaug.apply_op", with_item):
        _, report = _augment(_cfg(), True, [("Invert", 5.0)])
    assert [e.op for e in report.syncs] == ["_local_scalar_dense"] * 2  # one per sample
    assert report.syncs[0].where.startswith("pipelines/randaug.py:")  # the project line that called it


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
        gen_a, gen_b = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
        cpu = apply_op(apply_op(x, first, 6.0, gen_a), second, 6.0, gen_a)
        with mock.patch("pipelines.randaug.host_path", lambda t: False):
            gpu = apply_op(apply_op(x, first, 6.0, gen_b), second, 6.0, gen_b)
        assert gpu.shape == x.shape and gpu.dtype == torch.uint8
        diff = (cpu.int() - gpu.int()).abs().float()
        assert diff.mean() < 1.5, (first, second, tuple(x.stride()), diff.mean())
