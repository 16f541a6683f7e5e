"""The base-model service: `BaseService.Generate` over the decoupled denoising loop."""
from __future__ import annotations

import threading
import time

import grpc
import torch

from swiftdiffusion.runtime.config import ControlNetMode, RuntimeConfig
from swiftdiffusion.runtime.lora.service import bal_step_hooks
from swiftdiffusion.runtime.pipeline.base_model import BaseModel, to_png
from swiftdiffusion.runtime.pipeline.engine import BaseEngine
from swiftdiffusion.runtime.pipeline.requests import GenerateParams, Limits
from swiftdiffusion.runtime.pipeline.step_hooks import LoraUse, StepHookFactory
from swiftdiffusion.runtime.serving.api import base_pb2, base_pb2_grpc
from swiftdiffusion.runtime.serving.grpc_common import Admission, accounted, mark_serving
from swiftdiffusion.runtime.serving.metrics import RuntimeMetrics
from swiftdiffusion.runtime.serving.model_store import resolve
from swiftdiffusion.runtime.serving.process import RunningServer, apply_process_settings, new_grpc_server
from swiftdiffusion.runtime.serving.residual_sources import residual_source_for
from swiftdiffusion.runtime.transport.residual_source import ControlNetUse


def lora_step_hooks(config: RuntimeConfig, model: BaseModel, metrics: RuntimeMetrics) -> StepHookFactory:
    """The per-request LoRA hook factory: BAL over the deployment's LoRA store (runtime/lora)."""
    return bal_step_hooks(config, model, metrics.registry)


def params_from_request(request: base_pb2.GenerateRequest, config: RuntimeConfig) -> GenerateParams:
    """Fill unset fields from the deployment's defaults and configured ControlNet scales."""
    defaults = config.require_base().defaults
    scales = {entry.name: entry.conditioning_scale for entry in config.controlnets}
    return GenerateParams(
        prompt=request.prompt,
        negative_prompt=request.negative_prompt,
        seed=request.seed,
        steps=request.steps if request.HasField("steps") else defaults.steps,
        guidance_scale=request.guidance_scale if request.HasField("guidance_scale") else defaults.guidance_scale,
        width=request.width if request.HasField("width") else defaults.width,
        height=request.height if request.HasField("height") else defaults.height,
        controlnets=tuple(
            ControlNetUse(
                c.name,
                c.image,
                c.conditioning_scale if c.HasField("conditioning_scale") else scales.get(c.name, 1.0),
            )
            for c in request.controlnets
        ),
        loras=tuple(
            LoraUse(lora.name, lora.scale if lora.HasField("scale") else None, lora.k if lora.HasField("k") else None)
            for lora in request.loras
        ),
    )


class BaseServicer(base_pb2_grpc.BaseServiceServicer):
    """Registered before the model loads (gRPC wants services before start); `engine` comes later."""

    def __init__(self, config: RuntimeConfig, metrics: RuntimeMetrics, threads: int | None = None) -> None:
        self.engine: BaseEngine | None = None
        self.config = config
        self.metrics = metrics
        self.threads = threads
        self.admission = Admission(config.grpc_workers)

    def Generate(self, request: base_pb2.GenerateRequest, context: grpc.ServicerContext) -> base_pb2.GenerateResponse:
        if self.engine is None:
            context.abort(grpc.StatusCode.UNAVAILABLE, "the base model is still loading")
        if self.threads:
            torch.set_num_threads(self.threads)  # per thread: gRPC workers start with the default
        with accounted(self.metrics, context, self.admission) as started:
            return self._generate(request, context, started)

    def _generate(self, request, context, started: float) -> base_pb2.GenerateResponse:
        params = params_from_request(request, self.config)
        limit = self.config.require_base().request_timeout_seconds
        remaining = context.time_remaining()
        deadline = time.monotonic() + (limit if remaining is None else min(limit, remaining))
        finished = threading.Event()
        context.add_callback(finished.set)
        result = self.engine.generate(params, is_cancelled=finished.is_set, deadline=deadline)
        png_started = time.perf_counter()
        png = to_png(result.image)
        timings = {**result.timings, "png": time.perf_counter() - png_started, "total": time.perf_counter() - started}
        return base_pb2.GenerateResponse(
            png=png,
            width=params.width,
            height=params.height,
            seed=params.seed,
            steps=params.steps,
            timings=[base_pb2.PhaseTiming(phase=k, seconds=v) for k, v in timings.items()],
        )


def start_base_server(config: RuntimeConfig) -> RunningServer:
    """Listen at once (health NOT_SERVING), load the model, then report SERVING."""
    apply_process_settings(config)
    base = config.require_base()
    metrics = RuntimeMetrics("base")
    metrics_port = metrics.serve(config.metrics_port, config.bind_address) if config.metrics_port >= 0 else None
    server, health, port = new_grpc_server(config)
    servicer = BaseServicer(config, metrics, config.torch_threads)
    base_pb2_grpc.add_BaseServiceServicer_to_server(servicer, server)
    server.start()
    model = BaseModel.load(
        resolve(base.model, config.model_store, base.revision), base.revision, base.dtype, config.model_store, config.device
    )
    metrics.observe_load("base", model.load_seconds)
    source, hooks, predictor = residual_source_for(config, model.device, model.dtype, metrics), lora_step_hooks(config, model, metrics), None
    if base.latent_parallelism:  # the second CFG worker, on the pod's second device (runtime/cfg)
        from swiftdiffusion.runtime.cfg.serving import latent_parallel_parts

        source, hooks, predictor = latent_parallel_parts(config, model, source, hooks, health)
    servicer.engine = BaseEngine(
        model,
        source,
        predictor=predictor,
        step_hooks=hooks,
        mode=ControlNetMode(base.controlnet_mode),
        limits=Limits(
            max_width=config.max_width, max_height=config.max_height,
            max_steps=config.max_steps, max_guidance_scale=config.max_guidance_scale,
        ),
        controlnet_names={c.name for c in config.controlnets},
        metrics=metrics,
    )
    servicer.engine.warm_up(base.defaults.guidance_scale)
    mark_serving(health)
    return RunningServer(server, health, port, metrics_port)
