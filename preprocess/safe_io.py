"""Outputs opened without following symbolic links.

A run or shard folder handed to us by someone else may hold a symlink named like one of our
outputs (``.s4d.lock``, ``metrics.jsonl``, ``plan.json.tmp``, ``checkpoints/``...). Writing
through it would truncate, overwrite or append to whatever it points at. ``open_new`` opens a
file with ``O_NOFOLLOW`` and ``refuse_symlink`` checks a path (a folder we write into) before
use; either refuses with one line naming the link.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import IO, Any

from .errors import InputError

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


class SymlinkRefused(InputError):
    """An output path is a symbolic link; the message names it."""

    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__(f"{path} is a symbolic link; refusing to write through it")
        self.path = str(path)


def refuse_symlink(path: str | os.PathLike) -> Path:
    """``path`` itself (not its parents) must not be a symbolic link; returns it as a Path."""
    if os.path.islink(path):
        raise SymlinkRefused(path)
    return Path(path)


_FLAGS = {
    "w": os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
    "a": os.O_WRONLY | os.O_CREAT | os.O_APPEND,
    "x": os.O_WRONLY | os.O_CREAT | os.O_EXCL,
    "r+": os.O_RDWR,
    "w+": os.O_RDWR | os.O_CREAT | os.O_TRUNC,
    "a+": os.O_RDWR | os.O_CREAT | os.O_APPEND,
    "x+": os.O_RDWR | os.O_CREAT | os.O_EXCL,
}


def open_new(path: str | os.PathLike, mode: str = "w", perm: int = 0o666, **kwargs: Any) -> IO[Any]:
    """``open(path, mode)`` for writing, refusing a symlink at ``path`` (``O_NOFOLLOW``; on a
    system without it, checked first). ``mode``: w, a, x, r+, w+, a+, x+, each with an optional b."""
    base = mode.replace("b", "")
    if base not in _FLAGS:
        raise ValueError(f"open_new: unsupported mode {mode!r}")
    if not _NOFOLLOW:
        refuse_symlink(path)
    try:
        fd = os.open(path, _FLAGS[base] | _NOFOLLOW | getattr(os, "O_CLOEXEC", 0), perm)
    except OSError as err:
        # ELOOP: a symlink at the last component (Linux, macOS; FreeBSD says EMLINK); EEXIST with "x"
        if err.errno in (errno.ELOOP, errno.EMLINK, errno.EEXIST) and os.path.islink(path):
            raise SymlinkRefused(path) from None
        raise
    try:
        return os.fdopen(fd, mode, **kwargs)
    except BaseException:
        os.close(fd)
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    """``Path.write_text`` without following a symlink at ``path``."""
    with open_new(path, "w", encoding="utf-8") as fh:
        fh.write(text)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """``path`` replaced by ``text`` in one rename (``PATH.tmp`` first): a kill or a full disk
    leaves the old file or the new one, never a mix; no symlink is followed."""
    refuse_symlink(path)
    tmp = Path(os.fspath(path) + ".tmp")
    write_text(tmp, text)
    write_point(f"write {tmp}")
    replace(tmp, path)


# Fault injection for the kill-point tests: with ``S4D_FAULT_AFTER_WRITES=N`` the process kills
# itself (SIGKILL: no handler, no cleanup, as a power cut or the OOM killer) right after its Nth
# durable write (with ``S4D_FAULT_MATCH=SUFFIX``, its Nth write whose description ends in SUFFIX,
# e.g. ``checkpoints/last.safetensors``: a rename into that name); with ``S4D_FAULT_TRACE=1`` each
# write point prints one ``s4d-write N WHAT`` line on stderr, so a test can list the writes of a
# run. Unset (always, outside tests) they cost nothing.
_WRITES = {"count": 0}


def write_point(what: str) -> None:
    """Mark one durable write (a file written in full, a rename, an appended line) as done."""
    limit, trace = os.environ.get("S4D_FAULT_AFTER_WRITES"), os.environ.get("S4D_FAULT_TRACE")
    if not limit and not trace:
        return
    if not what.endswith(os.environ.get("S4D_FAULT_MATCH", "")):
        return
    _WRITES["count"] += 1
    if trace:
        import sys

        print(f"s4d-write {_WRITES['count']} {what}", file=sys.stderr, flush=True)
    if limit and _WRITES["count"] == int(limit):
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


def replace(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """``os.replace(src, dst)``, one write point (the commit of an atomic write)."""
    os.replace(src, dst)
    write_point(f"rename {os.fspath(dst)}")
