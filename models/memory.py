"""This process's resident memory, and handing freed heap memory back to the operating system.

glibc keeps memory a process has freed for its next allocations; after a one-off release (the torch weights
once another runtime serves) `release_freed()` asks it to return what it can (``malloc_trim``). Elsewhere
(musl, macOS, Windows) it does nothing: their allocators decide for themselves.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc

import psutil


@functools.cache
def _trim():
    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc
        return None
    if trim is not None:
        trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def release_freed() -> bool:
    """Collect garbage and return the heap's free memory to the OS; whether the allocator could be asked."""
    gc.collect()
    trim = _trim()
    if trim is None:
        return False
    trim(0)
    return True


def rss_mb() -> float:
    """This process's resident set size in MB."""
    return psutil.Process().memory_info().rss / 2**20
