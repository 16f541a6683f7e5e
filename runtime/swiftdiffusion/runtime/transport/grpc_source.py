"""The network residual transport: one bidirectional gRPC stream per request.

The stream's request side is fed from a queue by the denoising thread; a reader thread
resolves the step futures in order as residuals arrive. Any stream failure (service
unreachable, deadline, remote error) fails every outstanding future with the remote
status, so the loop surfaces it at its next wait.
"""
from __future__ import annotations

import collections
import queue
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future

import grpc
import torch

from swiftdiffusion.runtime.controlnet.residuals import Residuals
from swiftdiffusion.runtime.errors import Cancelled, DeadlineExceeded, RequestError, Unavailable
from swiftdiffusion.runtime.serving.api import controlnet_pb2, controlnet_pb2_grpc
from swiftdiffusion.runtime.serving.grpc_common import BALANCED_CHANNEL_OPTIONS, balanced_target, error_from_rpc
from swiftdiffusion.runtime.serving.metrics import RuntimeMetrics
from swiftdiffusion.runtime.transport.residual_source import ResidualRequest
from swiftdiffusion.runtime.transport.tensor_codec import from_wire, to_wire, wire_bytes, write_wire

_END = object()


def open_message(request: ResidualRequest, wire_dtype: str) -> controlnet_pb2.ResidualsRequest:
    text = request.text
    return controlnet_pb2.ResidualsRequest(
        open=controlnet_pb2.SessionOpen(
            controlnets=[
                controlnet_pb2.ControlNetUse(name=u.name, image=u.image, conditioning_scale=u.conditioning_scale)
                for u in request.controlnets
            ],
            width=request.width,
            height=request.height,
            prompt_embeds=to_wire(text.prompt_embeds),
            text_embeds=to_wire(text.text_embeds),
            time_ids=to_wire(text.time_ids),
            guidance_scale=text.guidance_scale,
            wire_dtype=wire_dtype,
        )
    )


class GrpcSession:
    def __init__(self, stub, request: ResidualRequest, timeout: float | None, wire_dtype: str, metrics: RuntimeMetrics,
                 device: torch.device, dtype: torch.dtype) -> None:
        self._outgoing: queue.Queue = queue.Queue()
        self._pending: collections.deque[tuple[Future[Residuals], float]] = collections.deque()
        self._lock = threading.Lock()
        self._failure: RequestError | None = None
        self._ready = threading.Event()
        self._metrics, self._device, self._dtype = metrics, device, dtype
        self._outgoing.put(open_message(request, wire_dtype))
        self._call = stub.Residuals(self._requests(), timeout=timeout)
        self._reader = threading.Thread(target=self._read, name="residual-reader", daemon=True)
        self._reader.start()
        if not self._ready.wait(timeout):
            self.close()
            raise DeadlineExceeded("ControlNet service did not open the session before the deadline")
        if self._failure is not None:
            self.close()
            raise self._failure

    def request(self, step: int, latent: torch.Tensor, timestep: torch.Tensor) -> Future[Residuals]:
        future: Future[Residuals] = Future()
        with self._lock:
            if self._failure is not None:
                future.set_exception(self._failure)
                return future
            self._pending.append((future, time.perf_counter()))
        message = controlnet_pb2.ResidualsRequest()
        message.step.step = step
        write_wire(message.step.latent, latent)
        write_wire(message.step.timestep, timestep)
        self._outgoing.put(message)
        return future

    def close(self) -> None:
        """End the stream: gracefully when nothing is outstanding, otherwise by cancelling it."""
        with self._lock:
            outstanding = bool(self._pending)
        self._outgoing.put(_END)
        if outstanding:
            self._call.cancel()
        self._reader.join(timeout=5)
        if self._reader.is_alive():
            self._call.cancel()
            self._reader.join(timeout=5)
        self._fail(Cancelled("residual session closed"))

    def _requests(self) -> Iterator[controlnet_pb2.ResidualsRequest]:
        while (message := self._outgoing.get()) is not _END:
            yield message

    def _read(self) -> None:
        try:
            for response in self._call:
                if response.HasField("ready"):
                    self._ready.set()
                    continue
                self._resolve(response.residuals)
            self._fail(Cancelled("ControlNet service ended the session"))
        except grpc.RpcError as error:
            self._fail(error_from_rpc(error))
        except Exception as error:  # a malformed reply must fail the request, not hang it
            self._fail(Unavailable(f"bad reply from the ControlNet service: {error!r}"))

    def _resolve(self, message: controlnet_pb2.StepResiduals) -> None:
        with self._lock:
            future, sent = self._pending.popleft()
        residuals = Residuals(
            tuple(from_wire(t, self._device, self._dtype) for t in message.down),
            from_wire(message.mid, self._device, self._dtype),
        )
        self._metrics.residual_bytes.inc(sum(wire_bytes(t) for t in (*message.down, message.mid)))
        self._metrics.residual_transfer_seconds.observe(time.perf_counter() - sent)
        future.set_result(residuals)

    def _fail(self, error: RequestError) -> None:
        with self._lock:
            if self._failure is None:
                self._failure = error
            pending, self._pending = list(self._pending), collections.deque()
        for future, _ in pending:
            if not future.done():
                future.set_exception(self._failure)
        self._ready.set()


class GrpcResidualSource:
    """Residuals from a ControlNet service at `target` (host:port)."""

    def __init__(
        self,
        target: str,
        *,
        wire_dtype: str = "float32",
        metrics: RuntimeMetrics | None = None,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.target = target
        self.wire_dtype = wire_dtype
        self._channel = grpc.insecure_channel(balanced_target(target), options=BALANCED_CHANNEL_OPTIONS)
        self._stub = controlnet_pb2_grpc.ControlNetServiceStub(self._channel)
        self._metrics = metrics or RuntimeMetrics("base")
        self._device, self._dtype = torch.device(device), dtype

    def open(self, request: ResidualRequest, timeout: float | None = None) -> GrpcSession:
        return GrpcSession(self._stub, request, timeout, self.wire_dtype, self._metrics, self._device, self._dtype)

    def close(self) -> None:
        self._channel.close()
