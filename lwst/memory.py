"""Hand memory that the allocator keeps after a batch back to the system (glibc only).

A long run stylises images of many sizes in worker threads; glibc's malloc keeps the freed
blocks of each size in per-thread arenas rather than returning them, so a process's RSS climbs
for hundreds of items while its live tensors stay flat (docs/benchmarks.md, "Memory over a
long run"). ``malloc_trim(0)`` returns the free pages at the cost of a few milliseconds; torch
offers no call for it (its CPU allocator is malloc). Elsewhere (musl, macOS, Windows) this is a
no-op: those allocators return memory on their own terms.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys


@functools.cache
def _malloc_trim() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def release_freed_memory() -> bool:
    """Return the allocator's free pages to the system; True where it could (glibc)."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
