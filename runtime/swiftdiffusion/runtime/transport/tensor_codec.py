"""Tensors as raw bytes with dtype and shape, for the residual stream.

fp32 on the wire is exact; fp16 / bf16 halve the bytes at a small, measured error.
A decoded tensor is a read-only view of the message's bytes (no copy: residuals are
megabytes per step and the copy would run on the denoising core); consumers only read
residuals, and any conversion to another device or dtype makes its own copy.
"""
from __future__ import annotations

import math
import warnings

import torch

from swiftdiffusion.runtime.serving.api import controlnet_pb2

WIRE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_NAMES = {dtype: name for name, dtype in WIRE_DTYPES.items()}

warnings.filterwarnings("ignore", message="The given buffer is not writable", category=UserWarning)


def to_wire(tensor: torch.Tensor, wire_dtype: str | None = None) -> controlnet_pb2.Tensor:
    message = controlnet_pb2.Tensor()
    write_wire(message, tensor, wire_dtype)
    return message


def write_wire(target: controlnet_pb2.Tensor, tensor: torch.Tensor, wire_dtype: str | None = None) -> None:
    """Fill a field of a message under construction: building sub-messages apart and passing
    them in copies every payload again (measured: 6.4 ms against 0.6 ms per step for the mid
    model's 5.4 MB of residuals)."""
    if wire_dtype:
        tensor = tensor.to(WIRE_DTYPES[wire_dtype])
    if tensor.dtype not in _NAMES:
        raise ValueError(f"cannot send a {tensor.dtype} tensor")
    flat = tensor.detach().contiguous().cpu().reshape(-1)
    target.dtype = _NAMES[tensor.dtype]
    target.shape[:] = list(tensor.shape)
    target.data = flat.view(torch.uint8).numpy().tobytes()


def from_wire(message: controlnet_pb2.Tensor, device: torch.device | str = "cpu", dtype: torch.dtype | None = None) -> torch.Tensor:
    if message.dtype not in WIRE_DTYPES:
        raise ValueError(f"unknown tensor dtype {message.dtype!r}")
    data = message.data
    if len(data) != wire_bytes(message):
        raise ValueError(f"tensor of shape {list(message.shape)} needs {wire_bytes(message)} bytes, got {len(data)}")
    raw = torch.frombuffer(data, dtype=torch.uint8) if data else torch.empty(0, dtype=torch.uint8)
    tensor = raw.view(WIRE_DTYPES[message.dtype]).reshape(tuple(message.shape))
    return tensor.to(device=device, dtype=dtype or tensor.dtype)


def wire_bytes(message: controlnet_pb2.Tensor) -> int:
    """The payload size from shape and dtype, without touching (and copying) the payload."""
    return math.prod(message.shape) * WIRE_DTYPES[message.dtype].itemsize
