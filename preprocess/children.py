"""Child processes that die with their parent, and a main process that stops cleanly.

``die_with_parent`` (run in each pool worker's initializer) makes a worker exit when the
process that started it dies by any signal, SIGKILL included, so a killed ``s4d shards`` never
leaves workers writing outside its folder lock. ``stop_on_signals`` turns SIGTERM and SIGINT in
the main process into ``Stopped``, and ``stop_pool`` kills a pool's workers at once.
"""

from __future__ import annotations

import contextlib
import os
from concurrent.futures import ProcessPoolExecutor

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(parent: int) -> str:
    """Make this process exit when ``parent`` (the process that started it) dies, by any signal,
    so no worker outlives its run and writes outside the folder lock. On Linux the kernel sends
    SIGKILL (``PR_SET_PDEATHSIG``; it fires when the thread that started us exits, and ``s4d
    shards`` starts its pool from the main thread); elsewhere a thread polls ``os.getppid()``.
    Either way a parent that died before we got here is caught at once. Returns the means used."""
    import signal
    import sys

    how = "poll"
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0:
                how = "prctl"
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the parent died before the death signal was armed
        os._exit(1)
    if how == "poll":
        import threading
        import time

        def watch() -> None:
            while os.getppid() == parent:
                time.sleep(0.5)
            os._exit(1)

        threading.Thread(target=watch, name="s4d-parent-watch", daemon=True).start()
    return how


class Stopped(BaseException):
    """Raised in the main thread by SIGTERM / SIGINT while shards are written."""

    def __init__(self, signum: int) -> None:
        import signal

        super().__init__(signum)
        self.name = signal.Signals(signum).name


@contextlib.contextmanager
def stop_on_signals():
    """SIGTERM and SIGINT raise ``Stopped`` (main thread only; an ignored SIGINT stays ignored)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Stopped(signum)

    old = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        if signal.getsignal(sig) is not signal.SIG_IGN:
            old[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, previous in old.items():
            signal.signal(sig, previous)


def stop_pool(pool: ProcessPoolExecutor) -> None:
    """Kill the pool's workers now (a shard they were writing stays a ``.tmp``, redone on a re-run)."""
    procs = list((getattr(pool, "_processes", None) or {}).values())
    for p in procs:
        with contextlib.suppress(Exception):
            p.kill()
    for p in procs:
        with contextlib.suppress(Exception):
            p.join(10)
