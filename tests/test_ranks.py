"""Per-rank randomness and DDP without an unused-parameter search (issue 22, findings 1, 3, 4):
2-process gloo jobs on the CPU, the fallback loader's own generator, the host-copy guard."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pipelines import Augment, Loader, LoaderConfig, open_dataset
from pipelines.handover import CopyGuard

from .test_pipelines import image_shards  # noqa: F401  (a module fixture: 9 small images in shards)


def torchrun(job: str, *args: str) -> dict:
    """Run ``tests/<job>`` on 2 CPU processes; its rank 0 prints one JSON line last."""
    path = Path(__file__).with_name(job)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(path), *args]
    res = subprocess.run(
        cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(path.parent.parent)}
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_every_rank_draws_its_own_numbers_from_rank_zeros_weights(tmp_path):
    """After ``start_run`` the ranks' torch, ``random`` and numpy draws differ, and so do the MAE
    masks and the MoAE router noise under DDP for the same input; the weights (built after the
    per-rank seeds) are rank 0's on every rank, and without noise the ranks route alike."""
    assert torchrun("ddp_ranks_job.py", str(tmp_path)) == {
        "torch_differs": True,
        "random_differs": True,
        "numpy_differs": True,
        "masks_differ": True,
        "noise_differs": True,
        "gates_agree_without_noise": True,
        "weights_agree": True,
    }


def test_ddp_touches_the_idle_head_instead_of_searching_for_it():
    """A video-only step leaves the image head untouched (zero gradient, then none: no weight
    decay, no momentum) and experts that got no token with zero gradients, a joint epoch with
    accumulation keeps the ranks identical, and without the touch DDP
    (find_unused_parameters=False) fails at the next step."""
    assert torchrun("ddp_heads_job.py") == {
        "image_grads_zero": True,
        "idle_experts_zero": True,
        "video_grads_agree": True,
        "image_kept": True,
        "no_image_state": True,
        "steps": 3,
        "agree": True,
        "control_fails": True,
    }


@pytest.mark.parametrize("aug", [Augment.image(), Augment.mae_image()], ids=["crop", "rrc"])
def test_fallback_loader_leaves_the_global_generator_alone(image_shards, aug):  # noqa: F811
    """The training step draws from torch's global generator between batches (masks, noise):
    the fallback's random image crops neither reseed it nor depend on it."""
    m, out = image_shards
    ds = open_dataset(m, out, role="train")
    c = LoaderConfig(batch_size=4, train=True, size=64, image_resize=72, augment=aug)

    def run(global_seed: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        torch.manual_seed(global_seed)
        pixels, draws = [], []
        for batch in Loader(ds, c, backend="torch").epoch(0):
            pixels.append(batch["pixels"])
            draws.append(torch.rand(3))  # the step's own draws
        return pixels, draws

    a, draws = run(1)
    b, _ = run(2)
    assert all(torch.equal(x, y) for x, y in zip(a, b))  # the crops do not depend on the global state
    torch.manual_seed(1)
    assert all(torch.equal(d, torch.rand(3)) for d in draws)  # the global stream went on undisturbed
    rank1 = next(iter(Loader(ds, c, rank=1, world=2, backend="torch").epoch(0)))["pixels"]
    assert not torch.equal(rank1, a[0][: len(rank1)])  # another rank, other crops


class _Event:
    done = False  # whether the GPU has passed every recorded event
    made: list = []

    def __init__(self):
        self.waited = False
        _Event.made.append(self)

    def record(self, stream):
        pass

    def query(self):
        return _Event.done

    def synchronize(self):
        self.waited = True


class _HostTensor:
    """A CPU tensor whose copy to "cuda" is a no-op: enough for the guard's bookkeeping."""

    device = torch.device("cpu")

    def __init__(self, pinned: bool = True) -> None:
        self.pinned = pinned  # DALI's CPU outputs of a GPU pipeline are pinned

    def is_pinned(self) -> bool:
        return self.pinned

    def to(self, device, non_blocking=False):
        assert non_blocking and self.pinned  # a pageable source never goes up directly
        return self


def test_copy_guard_holds_host_sources_until_their_copy_has_run(monkeypatch):
    monkeypatch.setattr(torch.cuda, "Event", _Event)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: None)
    cpu = torch.zeros(2)
    guard = CopyGuard(depth=2)
    assert guard.copy([cpu], torch.device("cpu"))[0] is cpu and not guard._held  # CPU training: no copy, nothing held
    cuda = torch.device("cuda", 0)
    _Event.done, _Event.made = False, []
    batches = [[_HostTensor(), _HostTensor()] for _ in range(3)]
    for b in batches:
        guard.copy(b, cuda)
    assert [srcs for _, srcs in guard._held] == batches[1:]  # the GPU lags: two batches held...
    assert [e.waited for e in _Event.made] == [True, False, False]  # ...and the host waited for the oldest only
    _Event.done = True
    guard.copy([_HostTensor()], cuda)
    assert not guard._held  # every copy has run: all released, without waiting
    staged = []
    monkeypatch.setattr("pipelines.handover.to_device", lambda t, device: staged.append(t) or t)
    pageable = _HostTensor(pinned=False)
    guard.copy([pageable], cuda)
    assert staged == [pageable]  # staged through a fresh pinned block (a pageable copy could wait)
    _Event.done = False
