"""One process at a time per output folder (a training run, a shard folder).

``folder_lock(folder, what)`` holds an exclusive ``flock`` on ``folder/.s4d.lock`` for as long
as the context lasts; the kernel releases it when the process dies, so a killed run never
leaves a stale lock. A second process gets one line naming the holder's pid and command.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
from pathlib import Path
from typing import Iterator

from .errors import InputError
from .safe_io import open_new

LOCK_NAME = ".s4d.lock"


class FolderBusy(InputError):
    """Another process holds the folder; the message names it."""


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, what: str, name: str = LOCK_NAME) -> Iterator[None]:
    """``name``: the lock file, for jobs that may share a folder but not a part of it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    fh = open_new(path, "a+")  # a planted symlink is refused, never truncated
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            raise FolderBusy(f"{folder}: {what} is in use by {holder}; wait for it to finish or use another folder") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} ({' '.join(Path(a).name if i == 0 else a for i, a in enumerate(sys.argv))[:200]})\n")
        fh.flush()
        yield
    finally:
        fh.close()  # closing releases the lock
