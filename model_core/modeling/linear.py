"""nn.Linear whose CPU inference adds the bias inside oneDNN's GEMM instead of in a memory pass of its own."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .autocast_weights import autocast_weights


def _fused_op():
    """oneDNN's linear with the bias in its epilogue, where this torch build has it (CPU builds with mkldnn)."""
    if not torch.backends.mkldnn.is_available():
        return None
    try:
        return torch.ops.mkldnn._linear_pointwise
    except (AttributeError, RuntimeError):
        return None


_FUSED = _fused_op()


class Linear(nn.Linear):
    """nn.Linear (same parameters, same checkpoint keys); on a CPU in fp32 inference, one fused oneDNN call.

    torch's CPU linear first copies the bias into the output, then accumulates the GEMM onto it: on Hiera's
    wide, shallow layers (65536 tokens x 96 -> 288 at 1024 px) that costs as much again as the GEMM. The fused
    call gives the same numbers (bit-identical here). Autograd, autocast and torch.compile take nn.Linear's path;
    under autocast with the weights' autocast copies kept (`autocast_weights`).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _fusable(x, self.weight):
            return _FUSED(x, self.weight, self.bias, "none", [], "")
        return F.linear(x, *autocast_weights(self, x))


def _fusable(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return (
        _FUSED is not None
        and x.device.type == "cpu"
        and x.dtype == weight.dtype == torch.float32
        and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))
        and not torch.is_autocast_enabled("cpu")
        and not torch.compiler.is_compiling()
    )
