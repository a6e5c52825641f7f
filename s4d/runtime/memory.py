"""Keeping a long-running process's memory flat."""

from __future__ import annotations


def release_freed_memory() -> None:
    """Hand freed heap pages back to the OS (glibc ``malloc_trim``). MTCNN's per-batch pyramids
    leave the heap fragmented: without this the detection pass grew by ~70 KB per 640x360
    frame (BENCHMARKS.md); elsewhere a no-op."""
    global _LIBC
    if _LIBC is None:
        import ctypes
        import ctypes.util

        try:
            _LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _LIBC.malloc_trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):
            _LIBC = False
    if _LIBC:
        _LIBC.malloc_trim(0)


_LIBC = None
