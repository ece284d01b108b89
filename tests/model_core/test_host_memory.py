"""keep_freed_memory: large tensors come from malloc's heap and stay there after free (checked with mallinfo2).

Each check runs in a child process, since the setting is process-wide and cannot be undone.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from model_core.host_memory import glibc

ROOT = Path(__file__).resolve().parents[2]

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
elif sys.argv[1].startswith("service:"):  # what the service does at load with SAM2_HOST_MALLOC
    from model_core import build_model
    from service.metrics import Metrics
    from service.model_work import ModelWork
    from tests.service.conftest import make_settings
    settings = make_settings(host_malloc=sys.argv[1].removeprefix("service:"), warmup=False)
    ModelWork(settings, build_model("sam2.1_t", weights="random", image_size=64), Metrics()).load()
x = torch.ones(64 << 20)  # 256 MiB of float32
mapped = libc.mallinfo2().hblkhd
del x
print(mapped >> 20, libc.mallinfo2().arena >> 20)
"""


def probe(mode: str) -> tuple[int, int]:
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, check=True, cwd=ROOT)
    mapped, heap = out.stdout.split()[-2:]  # the last line: the probe's figures
    return int(mapped), int(heap)


def test_glibc_default_maps_large_tensors_and_returns_them():
    mapped, heap = probe("system")
    assert mapped >= 256
    assert heap < 256


def test_kept_memory_serves_large_tensors_from_the_heap_and_keeps_them():
    mapped, heap = probe("keep")
    assert mapped < 256
    assert heap >= 256  # freed, and still there for the next pass


def test_the_service_keeps_freed_memory_unless_told_otherwise():
    assert probe("service:keep")[0] < 256
    assert probe("service:system")[0] >= 256
