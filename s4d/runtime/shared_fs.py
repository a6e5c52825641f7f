"""Is the run folder the same folder on every node? A multi-node run keeps one state in ``--out``
(config.json, the lock, checkpoints and the RNG states that resume reads, cv's finished folds),
so a folder that each node sees as its own local copy trains with split state and resumes wrong.

At the start, rank 0 writes a marker with a random token into the run folder; after the token
reaches every rank, local rank 0 of each node (``LOCAL_RANK`` 0) looks for that marker with that
token. A flag all-reduced over the group tells every rank whether some node missed it, so every
rank stops with the same one-line error instead of one stopping and the rest waiting for it.
"""

from __future__ import annotations

import secrets
import socket
import time
from pathlib import Path

import torch
import torch.distributed as dist

from preprocess.errors import InputError

from .dist import Dist

MARKER = ".s4d-shared-check"
# How long a node keeps looking before it declares the folder not shared: NFS clients may answer
# a lookup from their cache for a few seconds after another host created the file.
WAIT_S = 10.0


class RunFolderNotShared(InputError):
    """The run folder is not one folder for every node (one line naming it)."""


def check_shared_folder(out: Path, d: Dist, *, wait_s: float | None = None) -> None:
    """Stop every rank with :class:`RunFolderNotShared` when a node does not see rank 0's
    marker in ``out``. A no-op in a single-process run; three collectives otherwise (on the CPU
    half of the group, gloo)."""
    if not d.active:
        return
    out = Path(out)
    marker = out / MARKER
    token, failure = 0, None
    if d.main:
        token = secrets.randbits(62) + 1  # never 0, which says "rank 0 could not write"
        try:
            out.mkdir(parents=True, exist_ok=True)
            marker.write_text(f"{token:x}\n")
        except OSError as err:
            token, failure = 0, err
    t = torch.tensor([token], dtype=torch.int64)
    dist.broadcast(t, src=0)  # every rank gets the token only after the marker was written and closed
    token = int(t.item())
    missed = 0
    if token and d.local_rank == 0 and not d.main:
        missed = 0 if _sees(marker, token, WAIT_S if wait_s is None else wait_s) else 1
    flag = torch.tensor([missed], dtype=torch.int64)
    dist.all_reduce(flag)  # every rank learns the outcome: none waits for a peer that stopped
    if d.main:
        marker.unlink(missing_ok=True)
    if not token:
        if failure is not None:
            raise failure
        raise RunFolderNotShared(f"{out}: rank 0 could not write into the run folder; see rank 0's error")
    if int(flag.item()):
        where = f" (this one: {socket.gethostname()})" if missed else ""
        raise RunFolderNotShared(
            f"{out}: the run folder is not on a shared file system: {int(flag.item())} node(s){where} do not see the "
            "marker rank 0 wrote there; a multi-node run needs --out on a file system every node mounts at the same path"
        )


def _sees(marker: Path, token: int, wait_s: float) -> bool:
    deadline = time.monotonic() + wait_s
    while True:
        try:
            if marker.read_text().strip() == f"{token:x}":
                return True
        except OSError:
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)
