"""glibc's malloc set for tensor-sized blocks: served from the heap and kept there, not mapped afresh per pass.

By default glibc maps every block over 32 MiB (most activations at 1024 px) with its own mmap and unmaps it on
free, so every forward pass pays the page faults and the zeroing of each large tensor again: measured here, the
tiny encoder at 1024 px reached 61% of the machine's GEMM rate with that default and 70% with this (README, CPU).
"""

from __future__ import annotations

import ctypes
import platform

_M_TRIM_THRESHOLD = -1  # mallopt parameters, as glibc's malloc.h numbers them
_M_MMAP_MAX = -4
_KEEP_FREE = 2**31 - 1  # bytes of free heap top kept before trimming (the largest value mallopt takes)


def glibc() -> ctypes.CDLL | None:
    """This process's C library, where it is glibc (mallopt's parameters are glibc's)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    return ctypes.CDLL(None)


def keep_freed_memory() -> bool:
    """Serve every block from malloc's heap and keep freed memory for reuse; False where that is not glibc.

    Process-wide and not undone: the resident size stays near its peak (freed blocks wait for the next pass)
    instead of falling between passes, the trade a server that runs the same passes again makes gladly.
    """
    libc = glibc()
    if libc is None:
        return False
    return libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, _KEEP_FREE) == 1
