"""Autocast's reduced-precision copies of a layer's weights, made once and kept instead of on every call.

Under fp16/bf16 autocast, every linear and convolution casts its fp32 weight and bias before running: two
extra kernels (and two host-side dispatches) per layer and call, 334 of the 1473 ops of a tiny tracking step.
autocast keeps such casts only for weights that require grad, outside inference mode: never for inference. Here a
layer keeps the cast copies until its weights, the device or the autocast dtype change; the layer then runs
on exactly the values autocast would have made (fp32 -> fp16 is deterministic), so outputs are bit-identical.
The cost is the copies' memory: half of the fp32 weights' size for fp16/bf16.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

_enabled = True


@contextlib.contextmanager
def kept(enabled: bool):
    """Turn keeping the copies on or off within the block (benchmarks and tests compare both ways)."""
    global _enabled
    before, _enabled = _enabled, enabled
    try:
        yield
    finally:
        _enabled = before


def autocast_weights(layer: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The (weight, bias) a layer should call its op with on `x`: kept autocast-dtype copies where autocast
    would cast them, else the parameters themselves (fp32, training, torch.compile, non-fp32 weights)."""
    weight, bias = layer.weight, layer.bias
    dev = x.device.type
    if (
        not _enabled
        or not torch.is_autocast_enabled(dev)
        or weight.dtype != torch.float32
        or (torch.is_grad_enabled() and weight.requires_grad)
        or torch.compiler.is_compiling()
    ):
        return weight, bias
    dtype = torch.get_autocast_dtype(dev)
    # data_ptr: moved or replaced weights; _version: weights loaded or edited in place
    key = (dtype, weight.data_ptr(), weight._version, None if bias is None else (bias.data_ptr(), bias._version))
    copies = layer.__dict__.get("_autocast_copies")
    if copies is None or copies[0] != key:
        with torch.inference_mode(False), torch.no_grad():  # ordinary tensors, usable outside inference mode
            copies = (key, weight.to(dtype), None if bias is None else bias.to(dtype))
        layer.__dict__["_autocast_copies"] = copies
    return copies[1], copies[2]
