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

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


class SymlinkRefused(ValueError):
    """An output path is a symbolic link; the message names it."""

    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__(f"{path} is a symbolic link; refusing to write through it")
        self.path = str(path)


def refuse_symlink(path: str | os.PathLike) -> Path:
    """``path`` itself (not its parents) must not be a symbolic link; returns it as a Path."""
    if os.path.islink(path):
        raise SymlinkRefused(path)
    return Path(path)


_FLAGS = {"w": os.O_WRONLY | os.O_CREAT | os.O_TRUNC, "a": os.O_WRONLY | os.O_CREAT | os.O_APPEND,
          "x": os.O_WRONLY | os.O_CREAT | os.O_EXCL, "r+": os.O_RDWR, "w+": os.O_RDWR | os.O_CREAT | os.O_TRUNC,
          "a+": os.O_RDWR | os.O_CREAT | os.O_APPEND, "x+": os.O_RDWR | os.O_CREAT | os.O_EXCL}


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
