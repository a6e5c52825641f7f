"""Stopping a run cleanly: SIGTERM (a scheduler) and SIGINT (Ctrl-C) end it with the last
finished epoch on disk; a signal that arrives while an epoch is being saved waits for the save."""

from __future__ import annotations

import contextlib

_CRITICAL = {"inside": False, "pending": None}


def stop_on_sigterm() -> None:
    """SIGTERM (a scheduler) and SIGINT (Ctrl-C) stop the run; the last finished epoch is on
    disk. A signal that arrives while an epoch is being saved is delivered right after the save."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():

        def handler(signum, frame):
            if _CRITICAL["inside"]:
                _CRITICAL["pending"] = signum
            else:
                raise KeyboardInterrupt(f"signal {signum}")

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)


@contextlib.contextmanager
def uninterrupted():
    _CRITICAL["inside"] = True
    try:
        yield
    finally:
        _CRITICAL["inside"] = False
        if _CRITICAL["pending"] is not None:
            signum, _CRITICAL["pending"] = _CRITICAL["pending"], None
            raise KeyboardInterrupt(f"signal {signum}")
