"""Decoded batches handed from DALI to torch without a copy, and from host memory to the GPU
without a host wait and without freeing a buffer that a queued copy still has to read.

DALI -> torch (``dali_to_torch``): GPU outputs through DLPack on torch's current stream (DALI
makes that stream wait for its own work); CPU outputs through the array interface (DALI may pin
the CPU outputs of a GPU pipeline, which torch's DLPack import refuses). Either way the tensor
holds DALI's buffer. That is safe past the next ``run()`` because our graphs use the dynamic
executor (``exec_dynamic=True``): DALI 1.44's release notes list "zero-copy outputs transfer
with dynamic executor", and the change that dropped the PyTorch plugin's output copy says "when
using the dynamic executor, the outputs can be safely transferred (they won't be overwritten)"
(NVIDIA/DALI#5699); the TensorList documentation still states the older executors' rule (the
next ``run()`` invalidates the outputs). ``tests/test_pipelines.py`` keeps a whole epoch of CPU
outputs and compares them with a fresh epoch.

Host -> GPU (``CopyGuard``): the buffer lives as long as a reference to it, and no longer.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import torch

from preprocess.transfer import to_device


def dali_to_torch(out) -> torch.Tensor:
    """A dense DALI TensorList -> torch tensor sharing its memory (see the module docstring)."""
    dense = out.as_tensor()
    if type(dense).__name__ == "TensorGPU":
        return torch.from_dlpack(dense)
    return torch.from_numpy(np.asarray(dense))


class CopyGuard:
    """``copy(tensors, device)``: non-blocking copies to ``device`` whose host sources stay
    alive until the GPU has read them.

    Chosen over a synchronous copy, which from pinned memory waits for everything queued on the
    stream (the previous training step): a host sync per batch. A non-blocking copy from pinned
    memory returns before the GPU reads the source. torch guards its own pinned blocks (its host
    allocator records an event per copy) but not DALI's: once the last reference to a DALI CPU
    output goes, DALI's pool may hand the memory to a later batch (its prefetch runs ahead)
    while the copy still waits behind the previous step. So each batch's sources are held with a
    CUDA event recorded after its copies, and dropped once the event has passed (polled, never
    waited for); only when more than ``depth`` batches are still in flight does the host wait
    for the oldest, which bounds the pinned memory held. Pageable sources (the PyTorch fallback)
    are staged in a fresh pinned block (``to_device``): a "non-blocking" copy from pageable
    memory may wait for the stream; torch's pinned cache guards the staged block itself. On a
    CPU device there is no copy at all."""

    def __init__(self, depth: int = 4) -> None:
        self.depth = depth
        self._held: deque[tuple[torch.cuda.Event, list[torch.Tensor]]] = deque()

    def copy(self, tensors: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
        # a pinned source (DALI's) goes up as it is and is held below; a pageable one (the
        # PyTorch fallback) is staged in a fresh pinned block first, or the copy could wait
        out = [
            t.to(device, non_blocking=True) if t.device.type != "cpu" or t.is_pinned() or device.type != "cuda" else to_device(t, device)
            for t in tensors
        ]
        sources = [t for t in tensors if t.device.type == "cpu"]
        if device.type != "cuda" or not sources:
            return out
        event = torch.cuda.Event()
        event.record(torch.cuda.current_stream(device))
        self._held.append((event, sources))
        while self._held and self._held[0][0].query():
            self._held.popleft()
        if len(self._held) > self.depth:
            self._held.popleft()[0].synchronize()  # the host is `depth` batches ahead of the GPU
        return out
