"""Residual tensors survive the wire exactly in fp32 and closely in fp16 / bf16."""
import pytest
import torch

from swiftdiffusion.runtime.transport.tensor_codec import from_wire, to_wire


def test_float32_round_trip_is_bit_exact() -> None:
    tensor = torch.randn(2, 5, 3, 7, generator=torch.Generator().manual_seed(0))
    assert torch.equal(from_wire(to_wire(tensor)), tensor)
    scalar = torch.tensor(981.0)
    assert torch.equal(from_wire(to_wire(scalar)), scalar)


@pytest.mark.parametrize(("wire", "tolerance"), [("float16", 1e-3), ("bfloat16", 1e-2)])
def test_half_precision_on_the_wire_halves_bytes_at_small_error(wire: str, tolerance: float) -> None:
    tensor = torch.rand(4, 64, 8, 8, generator=torch.Generator().manual_seed(1))
    message = to_wire(tensor, wire)
    assert len(message.data) == tensor.numel() * 2
    back = from_wire(message, dtype=torch.float32)
    assert 0 < (back - tensor).abs().max() < tolerance


def test_truncated_payload_is_refused_naming_the_shape() -> None:
    message = to_wire(torch.ones(2, 3))
    message.data = message.data[:-4]
    with pytest.raises(ValueError, match=r"shape \[2, 3\] needs 24 bytes, got 20"):
        from_wire(message)


def test_empty_tensor_round_trips() -> None:
    assert from_wire(to_wire(torch.ones(0, 4))).shape == (0, 4)
