"""The one step loop of fine-tuning and MAE pre-training, and their losses.

Batches come from ``pipelines`` (dicts with ``pixels``, ``labels``, ``keys``); the loop knows
nothing of shards or DALI. An epoch is a sequence of ``(task, batch)`` pairs, each batch from one
source. Fine-tuning's loss is the soft-target cross-entropy with weight 1 whatever the source
(the reference: the paper's Eq. 3 alpha is a 0/1 switch by batch source), plus the MoE balance
loss (zero unless configured); ``alpha=A`` weights video batches A and image batches 1 - A
instead. Pre-training's is the MAE reconstruction loss, every step single-source.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch
from timm.loss import SoftTargetCrossEntropy

from ..runtime import autocast


class NonFiniteLoss(FloatingPointError):
    """The loss became NaN/inf; the message gives the step and the batch keys."""


@dataclass
class EpochStats:
    steps: int
    loss: float  # mean weighted loss over steps
    seconds: float = 0.0


LossFn = Callable[[torch.nn.Module, str, torch.Tensor, torch.Tensor], torch.Tensor]


class GateMeter:
    """Mean gate weight of every expert in every MoAE layer, per task, over the batches of an
    epoch: (layers, E) per task, accumulated on the device (no host sync per step)."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}

    def add(self, task: str, gates: tuple[torch.Tensor, ...]) -> None:
        """``gates``: one (B, N, E) tensor per MoAE layer (``ModelAux.gates``)."""
        if not gates:
            return
        means_LE = torch.stack([g.detach().float().mean(dim=(0, 1)) for g in gates])
        self.sums[task] = self.sums[task] + means_LE if task in self.sums else means_LE
        self.counts[task] = self.counts.get(task, 0) + 1

    def take(self) -> dict[str, np.ndarray]:
        """The epoch's means per task, and a fresh start."""
        means = {task: (s / self.counts[task]).cpu().numpy() for task, s in self.sums.items()}
        self.sums, self.counts = {}, {}
        return means


def classification_loss(mixers: dict[str, Callable] | None = None, alpha: float | None = None, gates: GateMeter | None = None) -> LossFn:
    """Fine-tuning's loss of one single-source batch: soft-target cross-entropy (Mixup/CutMix
    targets from ``mixers``, else one-hot) with weight 1, or ``alpha`` / ``1 - alpha`` for
    video / image batches, plus the MoE balance loss. ``gates`` collects the routing."""
    criterion = SoftTargetCrossEntropy()

    def loss(model: torch.nn.Module, task: str, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        num_classes = getattr(model, "module", model).config.heads[task]  # DDP wraps the model
        x, soft = mixers[task](x, y) if mixers and task in mixers else (x, one_hot(y, num_classes))
        logits, aux = model(x, task=task, return_aux=True)
        if gates is not None:
            gates.add(task, aux.gates)
        weight = 1.0 if alpha is None else (alpha if task == "video" else 1.0 - alpha)
        return weight * criterion(logits.float(), soft) + aux.balance_loss

    return loss


def mae_loss(model: torch.nn.Module, task: str, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Pre-training's loss: the MAE's reconstruction loss (labels unused; ``task`` is the source)."""
    return model(x).loss


def train_epoch(
    model: torch.nn.Module,
    batches: Iterable[tuple[str, dict]],
    optimizer: torch.optim.Optimizer,
    scheduler=None,
    *,
    step: int = 0,
    loss_fn: LossFn | None = None,
    mixers: dict[str, Callable] | None = None,
    alpha: float | None = None,
    gates: GateMeter | None = None,
    on_step: Callable[[int, float, float], None] | None = None,
    device: torch.device | str = "cpu",
    autocast_dtype: torch.dtype | None = None,
    accum: int = 1,
    check_every: int | None = None,
) -> tuple[EpochStats, int]:
    """One pass over ``(task, batch)`` pairs, for fine-tuning and MAE pre-training alike; returns
    the statistics and the global (optimiser) step after it.

    ``loss_fn`` defaults to ``classification_loss(mixers, alpha, gates)``. ``accum`` batches are
    accumulated per optimiser step. The finiteness of the loss is checked on the host every
    ``check_every`` batches (default: every batch on CPU, every 25 on a GPU, so steps do not
    wait on the device); a NaN/inf stops the run naming the first bad batch. At each check,
    ``on_step(step, loss, lr)`` is called for every optimiser step since the last one (the mean
    loss of its batches, the largest lr of its groups): per-step logging at no extra sync."""
    model.train()
    loss_fn = loss_fn or classification_loss(mixers, alpha, gates)
    device = torch.device(device)
    check_every = check_every or (1 if device.type == "cpu" else 25)
    total, n = torch.zeros((), device=device), 0
    bad_at = torch.full((), -1, dtype=torch.int64, device=device)
    recent: dict[int, tuple[str, list[str]]] = {}
    step_loss, step_batches = torch.zeros((), device=device), 0
    logged: list[tuple[int, float, torch.Tensor]] = []  # (step, lr, mean loss) not yet handed to on_step

    def check() -> None:
        first = int(bad_at)  # one host sync per check
        if first >= 0:
            task_, keys = recent.get(first, ("?", []))
            raise NonFiniteLoss(f"loss became NaN/inf at step {step} (batch {first} of this epoch: {task_}, keys {keys[:4]})")
        recent.clear()
        if on_step is not None and logged:
            for (s, lr, _), value in zip(logged, torch.stack([t for *_, t in logged]).tolist()):
                on_step(s, value, lr)
            logged.clear()

    def optimizer_step() -> int:
        nonlocal step_loss, step_batches
        if on_step is not None:
            logged.append((step + 1, max(g["lr"] for g in optimizer.param_groups), step_loss / step_batches))
            step_loss, step_batches = torch.zeros((), device=device), 0
        return _optimizer_step(optimizer, scheduler, step)

    optimizer.zero_grad(set_to_none=True)
    for (task, batch), last in _flag_last(batches):
        # loader batches arrive on the device already (pipelines.handover.CopyGuard holds DALI's
        # host buffers until their copies have run); other host sources are pageable torch
        # memory, which the driver stages before the call returns, so they may be freed at once
        x = batch["pixels"].to(device, non_blocking=True)
        y = batch["labels"].to(device, non_blocking=True)
        if x.ndim == 6:  # (B, V, 3, T, H, W) views: each view is a sample (its own mask in MAE)
            x, y = x.flatten(0, 1), y.repeat_interleave(x.shape[1])
        # DDP all-reduces gradients only on the batch that completes an accumulation (or the
        # epoch); no_sync must hold over the forward too, where DDP prepares its reduction
        syncs = (n + 1) % accum == 0 or last
        with contextlib.nullcontext() if syncs or not hasattr(model, "no_sync") else model.no_sync():
            with autocast(device, autocast_dtype):
                loss = loss_fn(model, task, x, y)
            (loss / accum).backward()
        recent[n] = (task, list(batch["keys"]))
        # full_like fills on the device: no host-to-device copy, so no wait on the GPU here
        bad_at = torch.where((bad_at < 0) & ~torch.isfinite(loss), torch.full_like(bad_at, n), bad_at)
        if (n + 1) % check_every == 0:
            check()
        n += 1
        total += loss.detach()
        if on_step is not None:  # the step's mean loss, only when someone logs it
            step_loss, step_batches = step_loss + loss.detach().float(), step_batches + 1
        if n % accum == 0:
            step = optimizer_step()
    if n % accum:  # a last, partial accumulation
        step = optimizer_step()
    check()
    return EpochStats(n, float(total) / max(n, 1)), step


def _optimizer_step(optimizer: torch.optim.Optimizer, scheduler, step: int) -> int:
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if scheduler is not None:
        scheduler.step_update(step + 1)
    return step + 1


def _flag_last(items: Iterable) -> Iterator[tuple[Any, bool]]:
    """(item, is_last) pairs, looking one item ahead."""
    it = iter(items)
    try:
        prev = next(it)
    except StopIteration:
        return
    for item in it:
        yield prev, False
        prev = item
    yield prev, True


def one_hot(y_B: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B,) int64 -> (B, C) float, by scatter: ``F.one_hot`` checks the label range on the host
    (a device sync per call on CUDA)."""
    return torch.zeros(len(y_B), num_classes, device=y_B.device).scatter_(1, y_B[:, None], 1.0)
