"""Branch exchange over a local socket pair (multiprocessing Connection), raw tensor bytes.

The cheapest exchange between two processes on one host's CPU: one write and one read
per message into preallocated buffers, no pickling. Device tensors are staged via host
memory, so on GPUs prefer the torch.distributed exchange (NCCL, device to device).
"""
from __future__ import annotations

from collections.abc import Callable
from multiprocessing.connection import Connection

import torch

from swiftdiffusion.runtime.cfg.exchange import (
    HEADER_LEN,
    BranchReply,
    StepCommand,
    StepLayout,
    WorkerLost,
    decode_header,
    encode_header,
)

_HEADER_BYTES = HEADER_LEN * 8
_REPLY_OK, _REPLY_FAILED = b"\x01" * 8, b"\x00" * 8


def _as_bytes(tensor: torch.Tensor) -> memoryview:
    return memoryview(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())


class PipeExchange:
    """One end of a worker pair's socket; `peer_alive` turns a silent peer into WorkerLost."""

    def __init__(
        self,
        conn: Connection,
        device: torch.device | str = "cpu",
        peer_alive: Callable[[], bool] = lambda: True,
        poll_s: float = 0.2,
    ) -> None:
        self._conn, self._device, self._peer_alive, self._poll_s = conn, torch.device(device), peer_alive, poll_s
        self._layout: StepLayout | None = None
        self._buffer = bytearray()

    def prepare(self, layout: StepLayout) -> None:
        self._layout = layout
        self._numel = int(torch.Size(layout.latent_shape).numel())
        payload = self._numel * torch.empty((), dtype=layout.latent_dtype).element_size()
        self._buffer = bytearray(_HEADER_BYTES + payload)

    def send_step(self, command: StepCommand) -> None:
        header = _as_bytes(encode_header(command))
        payload = b"" if command.latent is None else _as_bytes(command.latent)
        self._send(bytes(header) + bytes(payload))

    def recv_step(self) -> StepCommand:
        size = self._recv()
        header = torch.frombuffer(self._buffer, dtype=torch.float64, count=HEADER_LEN).clone()
        latent = self._tensor(_HEADER_BYTES) if size > _HEADER_BYTES else torch.empty(0)
        return decode_header(header, latent, self._require_layout())

    def send_reply(self, reply: BranchReply) -> None:
        if reply.prediction is None:
            self._send(_REPLY_FAILED)
        else:
            self._send(_REPLY_OK + bytes(_as_bytes(reply.prediction)))

    def recv_reply(self) -> BranchReply:
        self._recv()
        if bytes(self._buffer[:8]) != _REPLY_OK:
            return BranchReply(None)
        return BranchReply(self._tensor(8))

    def close(self) -> None:
        self._conn.close()

    def _require_layout(self) -> StepLayout:
        if self._layout is None:
            raise RuntimeError("exchange used before prepare()")
        return self._layout

    def _tensor(self, offset: int) -> torch.Tensor:
        layout = self._require_layout()
        flat = torch.frombuffer(self._buffer, dtype=layout.latent_dtype, offset=offset, count=self._numel)
        return flat.reshape(layout.latent_shape).to(self._device, copy=True)

    def _send(self, data: bytes) -> None:
        try:
            self._conn.send_bytes(data)
        except OSError as error:
            raise WorkerLost(f"peer worker gone while sending: {error}") from error

    def _recv(self) -> int:
        try:
            while not self._conn.poll(self._poll_s):
                if not self._peer_alive():
                    raise WorkerLost("peer worker died")
            return self._conn.recv_bytes_into(self._buffer)
        except (EOFError, OSError) as error:
            raise WorkerLost(f"peer worker gone while receiving: {error}") from error
