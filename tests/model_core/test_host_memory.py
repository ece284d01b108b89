"""keep_freed_memory: large tensors come from malloc's heap and stay there after free (checked with mallinfo2)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from model_core.host_memory import glibc

pytestmark = pytest.mark.skipif(glibc() is None, reason="glibc's malloc only")

# prints, in MiB: memory in mmapped blocks while a 256 MiB tensor lives, and the heap's size after it is freed
_PROBE = """
import ctypes, sys
import torch
from model_core.host_memory import keep_freed_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "keep":
    assert keep_freed_memory()
x = torch.ones(64 << 20)  # 256 MiB of float32
mapped = libc.mallinfo2().hblkhd
del x
print(mapped >> 20, libc.mallinfo2().arena >> 20)
"""


def probe(mode: str) -> tuple[int, int]:
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, check=True)
    mapped, heap = out.stdout.split()
    return int(mapped), int(heap)


def test_glibc_default_maps_large_tensors_and_returns_them():
    mapped, heap = probe("system")
    assert mapped >= 256
    assert heap < 256


def test_kept_memory_serves_large_tensors_from_the_heap_and_keeps_them():
    mapped, heap = probe("keep")
    assert mapped < 256
    assert heap >= 256  # freed, and still there for the next pass
