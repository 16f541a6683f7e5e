"""The ControlNet service: residual sessions for many base servers at once.

Each session (one stream) resolves its ControlNets through the shared LRU cache,
preprocesses its control images once, then answers every step in order. A base server
that cancels ends the stream; the loop notices at the next message and stops.
"""
from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import torch

from swiftdiffusion.runtime.config import RuntimeConfig
from swiftdiffusion.runtime.controlnet.cache import ControlNetCache
from swiftdiffusion.runtime.controlnet.engine import ControlNetEngine
from swiftdiffusion.runtime.errors import InvalidArgument
from swiftdiffusion.runtime.pipeline.conditioning import TextConditioning
from swiftdiffusion.runtime.placement import DTYPES, pick_device
from swiftdiffusion.runtime.serving.api import controlnet_pb2, controlnet_pb2_grpc
from swiftdiffusion.runtime.serving.grpc_common import Admission, accounted, mark_serving
from swiftdiffusion.runtime.serving.metrics import RuntimeMetrics
from swiftdiffusion.runtime.controlnet.loader import controlnet_loader
from swiftdiffusion.runtime.serving.process import RunningServer, apply_process_settings, new_grpc_server
from swiftdiffusion.runtime.transport.residual_source import ControlNetUse, ResidualRequest
from swiftdiffusion.runtime.transport.tensor_codec import WIRE_DTYPES, from_wire, wire_bytes, write_wire


def request_from_open(message: controlnet_pb2.SessionOpen) -> ResidualRequest:
    if message.wire_dtype and message.wire_dtype not in WIRE_DTYPES:
        raise InvalidArgument("wire_dtype", f"{message.wire_dtype!r} is not one of {sorted(WIRE_DTYPES)}")
    text = TextConditioning(
        from_wire(message.prompt_embeds), from_wire(message.text_embeds), from_wire(message.time_ids),
        message.guidance_scale,
    )
    uses = tuple(ControlNetUse(u.name, u.image, u.conditioning_scale) for u in message.controlnets)
    return ResidualRequest(uses, message.width, message.height, text)


class ControlNetServicer(controlnet_pb2_grpc.ControlNetServiceServicer):
    def __init__(self, engine: ControlNetEngine, metrics: RuntimeMetrics, admission: Admission,
                 threads: int | None = None) -> None:
        self.engine = engine
        self.metrics = metrics
        self.admission = admission
        self.threads = threads

    def Residuals(self, request_iterator, context: grpc.ServicerContext) -> Iterator[controlnet_pb2.ResidualsResponse]:
        if self.threads:
            torch.set_num_threads(self.threads)  # per thread: gRPC workers start with the default
        with accounted(self.metrics, context, self.admission):
            yield from self._session(request_iterator, context)

    def _session(self, request_iterator, context) -> Iterator[controlnet_pb2.ResidualsResponse]:
        first = next(request_iterator, None)
        if first is None or not first.HasField("open"):
            raise InvalidArgument("open", "the first message of a session must be `open`")
        prepare_started = time.perf_counter()
        request = request_from_open(first.open)
        prepared = self.engine.prepare(request)
        wire_dtype = first.open.wire_dtype or "float32"
        yield controlnet_pb2.ResidualsResponse(
            ready=controlnet_pb2.SessionReady(
                controlnets=len(request.controlnets), prepare_seconds=time.perf_counter() - prepare_started
            )
        )
        for message in request_iterator:
            if not context.is_active():
                return
            if not message.HasField("step"):
                raise InvalidArgument("step", "only `step` messages may follow `open`")
            step_started = time.perf_counter()
            residuals = self.engine.compute(prepared, from_wire(message.step.latent), from_wire(message.step.timestep))
            response = controlnet_pb2.ResidualsResponse()
            reply = response.residuals
            reply.step = message.step.step
            for tensor in residuals.down:
                write_wire(reply.down.add(), tensor, wire_dtype)
            write_wire(reply.mid, residuals.mid, wire_dtype)
            reply.compute_seconds = time.perf_counter() - step_started
            self.metrics.step_seconds.observe(reply.compute_seconds)
            self.metrics.residual_bytes.inc(sum(wire_bytes(t) for t in (*reply.down, reply.mid)))
            yield response


def start_controlnet_server(config: RuntimeConfig) -> RunningServer:
    """The ControlNet pool's server: models load on demand into the LRU cache."""
    apply_process_settings(config)
    metrics = RuntimeMetrics("controlnet")
    metrics_port = metrics.serve(config.metrics_port, config.bind_address) if config.metrics_port >= 0 else None
    device = pick_device(config.device)
    dtype = config.controlnet.dtype
    cache = ControlNetCache(
        [c.name for c in config.controlnets],
        controlnet_loader(config, device, dtype),
        config.controlnet.cache_bytes,
        metrics,
    )
    engine = ControlNetEngine(cache, device, DTYPES[dtype])
    server, health, port = new_grpc_server(config)
    controlnet_pb2_grpc.add_ControlNetServiceServicer_to_server(
        ControlNetServicer(engine, metrics, Admission(config.grpc_workers), config.torch_threads), server
    )
    server.start()
    mark_serving(health)
    return RunningServer(server, health, port, metrics_port)
