"""The residual source a base worker gets from its config: the ControlNet service over gRPC,
or, with no service configured, an in-process engine over its own ControlNet cache.

Both CFG workers of a latent-parallel pod build theirs here, each for its own device.
"""
from __future__ import annotations

import torch

from swiftdiffusion.runtime.config import RuntimeConfig
from swiftdiffusion.runtime.controlnet.cache import ControlNetCache
from swiftdiffusion.runtime.controlnet.engine import ControlNetEngine
from swiftdiffusion.runtime.serving.metrics import RuntimeMetrics
from swiftdiffusion.runtime.controlnet.loader import controlnet_loader
from swiftdiffusion.runtime.transport.grpc_source import GrpcResidualSource
from swiftdiffusion.runtime.transport.inprocess import InProcessResidualSource
from swiftdiffusion.runtime.transport.residual_source import ResidualSource


def residual_source_for(
    config: RuntimeConfig, device: torch.device, dtype: torch.dtype, metrics: RuntimeMetrics
) -> ResidualSource | None:
    """None when the deployment has neither a ControlNet service nor ControlNets of its own."""
    base = config.require_base()
    if base.controlnet_service:
        return GrpcResidualSource(
            base.controlnet_service, wire_dtype=base.residual_wire_dtype, metrics=metrics, device=device, dtype=dtype
        )
    if not config.controlnets:
        return None
    cache = ControlNetCache(
        [c.name for c in config.controlnets],
        controlnet_loader(config, device, base.dtype),
        config.controlnet.cache_bytes,
        metrics,
    )
    return InProcessResidualSource(ControlNetEngine(cache, device, dtype))
