"""Run the real code on CUDA tensors faked on the CPU, and report what a GPU would have done.

``FakeTensorMode`` gives tensors with device "cuda" on a CPU-only build: every op computes the
shape, strides, dtype and device it would have on a GPU, but no data. A ``TorchDispatchMode``
pushed above it (``_Spy``) sorts the ops as they come:

- ops that touch no device tensor (draws from CPU generators, host-side tables) run for real,
  outside the fake mode, so the code's Python control flow sees real numbers;
- host-to-device copies (``Tensor.to("cuda")``, ``copy_`` into a device tensor) are recorded as
  uploads, with their ``non_blocking`` flag: a blocking upload waits on the stream;
- ops whose result the host must wait for (``.item()``, ``.tolist()``, device-to-host copies,
  ``nonzero``, ``bincount``, boolean masks, ...) are recorded as syncs with the project's
  file:line. The fake mode cannot know their result: ``.item()``-like reads go on with a zero
  (``on_sync="continue"``), output-shape-dependent ops stop the run.

Every record names the innermost frame of the project (``s4d/``, ``pipelines/``,
``preprocess/``), so a failing test points at the line to fix. Limits (see
``docs/architecture.md``): the C++ autograd engine refuses fake CUDA tensors, so ``backward``
walks the graph in Python (``backward``); advanced indexing in fake mode returns contiguous
layouts where real torch keeps the input's, so layout bugs also need a real-tensor check; a
CUDA ``torch.Generator`` needs a driver, so code takes its device generator from
``pipelines.augment.device_generator``, which ``FakeCuda`` replaces.
"""

from __future__ import annotations

import contextlib
import traceback
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from unittest import mock

import torch
import torch.utils._pytree as pytree
from torch._subclasses.fake_tensor import (
    DataDependentOutputException,
    DynamicOutputShapeException,
    FakeTensor,
    FakeTensorMode,
)
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes

ROOT = Path(__file__).resolve().parents[1]
_PROJECT = tuple(str(ROOT / d) + "/" for d in ("s4d", "pipelines", "preprocess"))
CUDA = torch.device("cuda", 0)
aten = torch.ops.aten


class HostSync(RuntimeError):
    """A data-dependent op on device data: the host would wait for the GPU here."""


@dataclass
class Event:
    op: str
    where: str  # innermost project frame, "path:line in function"
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.op} at {self.where}{' (' + self.detail + ')' if self.detail else ''}"


@dataclass
class Report:
    syncs: list[Event] = field(default_factory=list)
    uploads: list[Event] = field(default_factory=list)
    error: str | None = None  # "Type: message at path:line"

    def clear(self) -> None:
        """Forget what was seen so far (e.g. the model's construction before the step)."""
        self.syncs.clear()
        self.uploads.clear()
        self.error = None

    @property
    def blocking_uploads(self) -> list[Event]:
        return [u for u in self.uploads if not u.detail.endswith("pinned non_blocking")]

    def summary(self) -> str:
        lines = [f"error: {self.error}"] if self.error else []
        lines += [f"sync: {e}" for e in self.syncs] + [f"upload: {e}" for e in self.uploads]
        return "\n".join(lines) or "clean"


def where() -> str:
    """The innermost frame inside the project (else the innermost outside torch)."""
    frames = traceback.extract_stack()[:-1]
    for f in reversed(frames):
        if f.filename.startswith(_PROJECT):
            return f"{Path(f.filename).relative_to(ROOT)}:{f.lineno} in {f.name}"
    for f in reversed(frames):
        if "/torch/" not in f.filename and not f.filename.endswith("fakecuda.py"):
            return f"{f.filename}:{f.lineno} in {f.name}"
    return "?"


def _is_device(t: Any) -> bool:
    return isinstance(t, FakeTensor) and t.device.type == "cuda"


def _zeros(t: FakeTensor) -> torch.Tensor:
    """What a device-to-host copy returns when we go on past it: zeros of the right shape."""
    return torch.zeros(t.shape, dtype=t.dtype)


def _zero(t: torch.Tensor) -> Any:
    return False if t.dtype == torch.bool else (0.0 if t.dtype.is_floating_point else 0)


_PIN_OPS = {aten._pin_memory.default, aten.is_pinned.default}
_SYNC_OPS = {aten._local_scalar_dense.default}  # .item(), .tolist(), int(), bool(), float()


class _Identities:
    """A set of tensors by identity (``in`` on tensors would compare elements), not keeping them alive."""

    def __init__(self) -> None:
        self._refs: dict[int, weakref.ref] = {}

    def add(self, t: torch.Tensor) -> None:
        self._refs[id(t)] = weakref.ref(t)

    def __contains__(self, t: object) -> bool:
        ref = self._refs.get(id(t))
        return ref is not None and ref() is t


class _Spy(TorchDispatchMode):
    def __init__(self, report: Report, on_sync: str, scalar: Callable[[torch.Tensor], Any], host: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.report, self.on_sync, self.scalar, self.host = report, on_sync, scalar, host
        self.pinned = _Identities()  # host tensors that stand for pinned memory

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        leaves = pytree.tree_leaves((args, kwargs))
        on_device = any(_is_device(a) for a in leaves)
        dev = kwargs.get("device")
        to_device = dev is not None and torch.device(dev).type == "cuda"
        if func in _PIN_OPS:  # pinning needs a driver: a host copy stands for the pinned one, remembered
            if func is aten.is_pinned.default:
                return args[0] in self.pinned
            with _disable_current_modes():
                copy = args[0].clone()
            self.pinned.add(copy)
            return copy
        if kwargs.get("pin_memory"):
            with _disable_current_modes():
                out = func(*args, **{**kwargs, "pin_memory": False})
            self.pinned.add(out)
            return out
        if not on_device and not to_device:
            with _disable_current_modes():  # host work: run it for real
                return func(*args, **kwargs)
        name = str(func.overloadpacket.__name__)
        if func in _SYNC_OPS:
            return self._sync(name, args[0])
        if func is aten._to_copy.default:
            src = args[0]
            if not _is_device(src) and to_device:
                self._upload(name, src, kwargs.get("non_blocking", False))
            elif _is_device(src) and dev is not None and torch.device(dev).type == "cpu":
                return self._sync(name, src, "device-to-host copy")
        if func is aten.copy_.default:
            dst, src = args[0], args[1]
            if _is_device(dst) and not _is_device(src) and isinstance(src, torch.Tensor) and src.dim() > 0:
                self._upload(name, src, args[2] if len(args) > 2 else kwargs.get("non_blocking", False))
            elif _is_device(src) and not _is_device(dst):
                placeholder = self._sync(name, src, "device-to-host copy")
                with _disable_current_modes():
                    return dst.copy_(placeholder)
        try:
            return func(*args, **kwargs)
        except (DataDependentOutputException, DynamicOutputShapeException) as err:
            self.report.syncs.append(Event(name, where(), "output depends on device data"))
            raise HostSync(f"{name} at {self.report.syncs[-1].where}") from err

    def _upload(self, name: str, src: torch.Tensor, non_blocking: bool) -> None:
        """A copy is asynchronous only when asked and from pinned memory: a "non-blocking"
        copy from pageable memory may wait for the stream (CUDA's rule), so it counts as blocking."""
        how = ("pinned non_blocking" if src in self.pinned else "pageable, may wait") if non_blocking else ""
        self.report.uploads.append(Event(name, where(), f"{tuple(src.shape)} {str(src.dtype).removeprefix('torch.')} {how}".rstrip()))

    def _sync(self, name: str, t: torch.Tensor, detail: str = ""):
        self.report.syncs.append(Event(name, where(), detail))
        if self.on_sync == "raise":
            raise HostSync(f"{name} at {self.report.syncs[-1].where}")
        if name == "_local_scalar_dense":
            return self.scalar(t)
        with _disable_current_modes():
            return self.host(t)


class FakeCuda:
    """``with FakeCuda() as fc: ...``: tensors made with device "cuda" are fake; ``fc.report``
    collects syncs and uploads; ``fc.run(fn)`` catches an exception into the report.

    ``on_sync="continue"`` goes past ``.item()``-like reads with zeros (to count them all);
    ``"raise"`` stops at the first; ``scalar(t)`` is the value such a read returns (a test
    of a NaN check, say, answers -1 for "no bad batch"); ``host(t)`` makes the real tensor a
    device-to-host copy returns (default zeros). bf16 autocast on "cuda" is enabled (torch would disable it
    without a driver), and ``pipelines.augment.device_generator`` returns None (the default
    device generator, which the fake mode can draw from)."""

    def __init__(
        self,
        on_sync: str = "continue",
        scalar: Callable[[torch.Tensor], Any] | None = None,
        host: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        self.report = Report()
        self.on_sync = on_sync
        self.scalar, self.host = scalar or _zero, host or _zeros
        self._stack = contextlib.ExitStack()
        self.mode = FakeTensorMode(allow_non_fake_inputs=True)

    def __enter__(self) -> "FakeCuda":
        s = self._stack
        s.enter_context(mock.patch("torch.cuda.amp.common.amp_definitely_not_available", lambda: False))
        s.enter_context(mock.patch("torch.cuda.is_bf16_supported", lambda *a, **k: True))
        s.enter_context(mock.patch("pipelines.augment.device_generator", lambda device, seed: None))
        s.enter_context(self.mode)
        s.enter_context(_Spy(self.report, self.on_sync, self.scalar, self.host))
        return self

    def __exit__(self, *exc) -> bool:
        return self._stack.__exit__(*exc)

    def run(self, fn: Callable[[], Any]) -> Any:
        """Call ``fn``; an exception is recorded with the project frame it came from."""
        try:
            return fn()
        except HostSync:
            return None
        except Exception as err:  # noqa: BLE001 - the report is the point
            self.report.error = f"{type(err).__name__}: {str(err).splitlines()[0][:300]} at {_origin(err)}"
            return None


def _origin(err: BaseException) -> str:
    for f in reversed(traceback.extract_tb(err.__traceback__)):
        if f.filename.startswith(_PROJECT):
            return f"{Path(f.filename).relative_to(ROOT)}:{f.lineno} in {f.name}"
    return "?"


def fake_cuda(fn: Callable[[], Any], on_sync: str = "continue") -> tuple[Any, Report]:
    """Run ``fn`` under ``FakeCuda``; returns (its result or None, the report)."""
    with FakeCuda(on_sync) as fc:
        out = fc.run(fn)
    return out, fc.report


# --------------------------------------------------------------------------- backward
def backward(loss: torch.Tensor) -> None:
    """``loss.backward()`` for fake CUDA tensors: the C++ engine refuses them (it sets up a
    device thread), so walk the graph here. Nodes are called in reverse topological order with
    the sum of the gradients their outputs received; leaves accumulate into ``.grad``."""
    root = loss.grad_fn
    if root is None:
        raise RuntimeError("backward: the loss does not require grad")
    order, seen = [], set()

    def visit(node) -> None:  # iterative DFS post-order (graphs are deep)
        stack = [(node, False)]
        while stack:
            n, done = stack.pop()
            if done:
                order.append(n)
                continue
            if n is None or n in seen:
                continue
            seen.add(n)
            stack.append((n, True))
            for nxt, _ in n.next_functions:
                if nxt is not None and nxt not in seen:
                    stack.append((nxt, False))

    visit(root)
    with torch.no_grad():  # as the engine: the gradients carry no graph of their own
        _run_nodes(order, {root: {0: torch.ones_like(loss)}})


def _run_nodes(order: list, grads: dict[Any, dict[int, torch.Tensor]]) -> None:
    for node in reversed(order):
        got = grads.pop(node, {})
        if not got:
            continue
        if type(node).__name__ == "AccumulateGrad":  # a fresh gradient in the parameter's layout, as the engine's
            var, g = node.variable, got[0]
            if var.grad is None:
                var.grad = torch.empty_like(var).copy_(g)
            else:
                var.grad.add_(g)
            continue
        n_out = max(len(getattr(node, "_input_metadata", ())), max(got) + 1)  # the forward op's outputs
        outs = node(*[got.get(i) for i in range(n_out)])
        outs = outs if isinstance(outs, tuple) else (outs,)
        for (nxt, idx), g in zip(node.next_functions, outs):
            if nxt is None or g is None:
                continue
            g = _as_input(nxt, idx, g)
            slot = grads.setdefault(nxt, {})
            slot[idx] = g if idx not in slot else slot[idx] + g


def _as_input(node, idx: int, g: torch.Tensor) -> torch.Tensor:
    """What the engine's ``validate_outputs`` does: a gradient of a broadcast input is summed to
    the input's shape and cast to its dtype."""
    if type(node).__name__ == "AccumulateGrad":
        shape, dtype = node.variable.shape, node.variable.dtype
    else:
        meta = getattr(node, "_input_metadata", ())
        if idx >= len(meta):
            return g
        shape, dtype = meta[idx].shape, meta[idx].dtype
    if g.shape != shape:
        g = g.sum_to_size(shape)
    return g.to(dtype) if g.dtype != dtype else g
