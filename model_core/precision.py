"""Numeric precision: which autocast dtype a device supports and a context manager that applies it."""

from __future__ import annotations

import contextlib

import torch

NAMES = {torch.float32: ("fp32", "float32"), torch.bfloat16: ("bf16", "bfloat16"), torch.float16: ("fp16", "float16")}
DTYPES = {name: dt for dt, names in NAMES.items() for name in names}  # what a setting may say


def dtype_name(dtype: torch.dtype) -> str:
    """The short name of a run dtype ("fp16"), as settings, metrics and /v1/models show it."""
    return NAMES[dtype][0] if dtype in NAMES else str(dtype)


def parse_dtype(value: str | torch.dtype | None) -> torch.dtype:
    if value is None:
        return torch.float32
    if isinstance(value, torch.dtype):
        return value
    try:
        return DTYPES[value.lower()]
    except KeyError:
        raise ValueError(f"unknown dtype {value!r}; use fp32, bf16 or fp16") from None


def cpu_supports_bf16() -> bool:
    """True where the CPU has native bf16 matmuls (AMX or AVX512-BF16), which make bf16 autocast pay off."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def default_dtype(device: str | torch.device) -> torch.dtype:
    """fp16 on CUDA, bf16 on CPUs with native bf16, fp32 otherwise: the service's default precision."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.float16
    if dev.type == "cpu" and cpu_supports_bf16():
        return torch.bfloat16
    return torch.float32


def autocast(device: str | torch.device, dtype: torch.dtype):
    """torch.autocast for reduced precision, a no-op context for fp32."""
    dev = torch.device(device)
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=dev.type, dtype=dtype)
