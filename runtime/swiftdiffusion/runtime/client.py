"""A small client for `BaseService.Generate` (used by the CLI, the demo and the tests)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import grpc

from swiftdiffusion.runtime.serving.api import base_pb2, base_pb2_grpc
from swiftdiffusion.runtime.serving.grpc_common import CHANNEL_OPTIONS, retry_unstarted


@dataclass(frozen=True)
class GenerateReply:
    png: bytes
    width: int
    height: int
    timings: dict[str, float]


def generate_request(
    prompt: str,
    *,
    negative_prompt: str = "",
    seed: int = 0,
    steps: int | None = None,
    guidance_scale: float | None = None,
    width: int | None = None,
    height: int | None = None,
    controlnets: Sequence[tuple[str, bytes, float | None]] = (),
    loras: Sequence[tuple[str, float | None]] = (),
) -> base_pb2.GenerateRequest:
    return base_pb2.GenerateRequest(
        prompt=prompt,
        negative_prompt=negative_prompt,
        seed=seed,
        steps=steps,
        guidance_scale=guidance_scale,
        width=width,
        height=height,
        controlnets=[
            base_pb2.ControlNetInput(name=name, image=image, conditioning_scale=scale)
            for name, image, scale in controlnets
        ],
        loras=[base_pb2.LoraInput(name=name, scale=scale) for name, scale in loras],
    )


# A seeded Generate is idempotent: one the server never started is tried again. Each call
# has a connection of its own: gRPC otherwise shares one connection between the channels of a
# process to the same address, and behind a Service's cluster IP (balanced per connection,
# as kube-proxy does) concurrent calls would all reach one pod until the server ends it.
CLIENT_CHANNEL_OPTIONS = [*CHANNEL_OPTIONS, *retry_unstarted("swiftdiffusion.v1.BaseService"),
                          ("grpc.use_local_subchannel_pool", 1)]


def generate(target: str, request: base_pb2.GenerateRequest, timeout: float | None = 600.0) -> GenerateReply:
    with grpc.insecure_channel(target, options=CLIENT_CHANNEL_OPTIONS) as channel:
        reply = base_pb2_grpc.BaseServiceStub(channel).Generate(request, timeout=timeout)
    return GenerateReply(reply.png, reply.width, reply.height, {t.phase: t.seconds for t in reply.timings})
