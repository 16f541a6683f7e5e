"""Branch exchange over a torch.distributed process group: gloo on CPU, NCCL on GPUs.

Uses a private two-rank group (not the global default group), so a worker pair can be
torn down and re-formed after a worker dies without touching process-global state.
"""
from __future__ import annotations

import datetime
import time
from collections.abc import Callable

import torch
import torch.distributed as dist

from swiftdiffusion.runtime.cfg.exchange import (
    HEADER_LEN,
    BranchReply,
    StepCommand,
    StepLayout,
    WorkerLost,
    decode_header,
    encode_header,
)

LEADER, FOLLOWER = 0, 1


def leader_store(host: str = "127.0.0.1", timeout_s: float = 120.0) -> dist.TCPStore:
    """The rendezvous store, hosted by the leader on a free port (read it from `.port`)."""
    return dist.TCPStore(
        host, 0, world_size=2, is_master=True, wait_for_workers=False,
        timeout=datetime.timedelta(seconds=timeout_s),
    )


def follower_store(host: str, port: int, timeout_s: float = 120.0) -> dist.TCPStore:
    return dist.TCPStore(host, port, world_size=2, is_master=False, timeout=datetime.timedelta(seconds=timeout_s))


class TorchDistributedExchange:
    """One rank of a two-rank group; receives poll completion so a dead peer raises WorkerLost."""

    def __init__(
        self,
        store: dist.Store,
        rank: int,
        device: torch.device | str = "cpu",
        peer_alive: Callable[[], bool] = lambda: True,
        timeout_s: float = 600.0,
    ) -> None:
        self._device = torch.device(device)
        self._rank, self._peer = rank, 1 - rank
        self._peer_alive = peer_alive
        timeout = datetime.timedelta(seconds=timeout_s)
        if self._device.type == "cuda":
            self._group: dist.ProcessGroup = dist.ProcessGroupNCCL(store, rank, 2, timeout)
        else:
            self._group = dist.ProcessGroupGloo(store, rank, 2, timeout)
        self._header = torch.zeros(HEADER_LEN, dtype=torch.float64, device=self._device)
        self._flag = torch.zeros(1, dtype=torch.float64, device=self._device)
        self._layout: StepLayout | None = None

    def prepare(self, layout: StepLayout) -> None:
        self._layout = layout
        self._latent = torch.empty(layout.latent_shape, dtype=layout.latent_dtype, device=self._device)

    def send_step(self, command: StepCommand) -> None:
        self._send(encode_header(command).to(self._device))
        if command.latent is not None:
            self._send(command.latent.to(self._device).contiguous())

    def recv_step(self) -> StepCommand:
        self._recv(self._header)
        if not self._header[0].item():
            return decode_header(self._header.cpu(), torch.empty(0), self._require_layout())
        self._recv(self._latent)
        return decode_header(self._header.cpu(), self._latent.clone(), self._require_layout())

    def send_reply(self, reply: BranchReply) -> None:
        self._send(torch.tensor([float(reply.ok)], dtype=torch.float64, device=self._device))
        if reply.prediction is not None:
            self._send(reply.prediction.to(self._device).contiguous())

    def recv_reply(self) -> BranchReply:
        self._recv(self._flag)
        if not self._flag.item():
            return BranchReply(None)
        self._recv(self._latent)
        return BranchReply(self._latent.clone())

    def close(self) -> None:
        self._group = None  # type: ignore[assignment]

    def _require_layout(self) -> StepLayout:
        if self._layout is None:
            raise RuntimeError("exchange used before prepare()")
        return self._layout

    def _send(self, tensor: torch.Tensor) -> None:
        self._finish(self._group.send([tensor], self._peer, 0))

    def _recv(self, tensor: torch.Tensor) -> None:
        self._finish(self._group.recv([tensor], self._peer, 0))

    def _finish(self, work: dist.Work) -> None:
        """Gloo raises as soon as the peer's socket closes; NCCL would wait for its timeout,
        so on GPUs completion is polled against the peer's liveness."""
        try:
            if self._device.type == "cuda":
                while not work.is_completed():
                    if not self._peer_alive():
                        raise WorkerLost("peer worker died")
                    time.sleep(0.0002)
            work.wait()
        except RuntimeError as error:
            if isinstance(error, WorkerLost):
                raise
            raise WorkerLost(f"peer worker gone: {error}") from error
