"""The check runner: ordered checks over one context, each timed, none able to stop the rest."""

from __future__ import annotations

import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch


class Skip(Exception):
    """The check does not apply here (the reason is shown)."""


class Fail(Exception):
    """A failed check whose message is the whole reason (shown without an exception name), with
    figures kept in its detail (the fix's commands, say)."""

    def __init__(self, reason: str, detail: dict[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.detail = detail or {}


@dataclass
class Context:
    """What checks share: a scratch folder, the device, and what earlier checks built."""

    root: Path
    device: torch.device
    built: dict[str, Any] = field(default_factory=dict)
    no_cuda: str = "no CUDA device"  # the GPU checks' skip reason; a GPU torch cannot use says so

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def need_cuda(self) -> None:
        if not self.cuda:
            raise Skip(self.no_cuda)

    def need(self, key: str) -> Any:
        if key not in self.built:
            raise Skip(f"needs the {key} check, which did not pass")
        return self.built[key]


@dataclass(frozen=True)
class Result:
    name: str
    status: str  # "ok" | "skipped: reason" | "FAIL: reason"
    detail: dict[str, Any]
    seconds: float

    @property
    def failed(self) -> bool:
        return self.status.startswith("FAIL")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "detail": self.detail, "seconds": round(self.seconds, 2)}


Check = Callable[[Context], dict[str, Any]]


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    if isinstance(err, Fail):
        return text[0][:600] if text else "failed"
    return f"{type(err).__name__}: {text[0][:300]}" if text else type(err).__name__


def run_checks(
    checks: list[tuple[str, Check]],
    device: torch.device,
    *,
    root: Path | None = None,
    on_result: Callable[[Result], None] | None = None,
    debug: bool = False,
) -> list[Result]:
    results = []
    with tempfile.TemporaryDirectory(prefix="s4d-doctor-") as tmp:
        ctx = Context(Path(root or tmp), device)
        for name, check in checks:
            t0 = time.perf_counter()
            try:
                detail, status = check(ctx) or {}, "ok"
            except Skip as why:
                detail, status = {}, f"skipped: {why}"
            except Exception as err:  # a failed check is a result, never a traceback
                detail = dict(err.detail) if isinstance(err, Fail) else {}
                if debug:
                    detail["traceback"] = traceback.format_exc()
                status = f"FAIL: {_one_line(err)}"
            result = Result(name, status, detail, time.perf_counter() - t0)
            results.append(result)
            if on_result:
                on_result(result)
    return results
