"""A generation request as the engine sees it, and the checks every request passes first."""
from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass

from swiftdiffusion.runtime.controlnet.control_image import decode_control_image
from swiftdiffusion.runtime.errors import InvalidArgument, NotFound
from swiftdiffusion.runtime.pipeline.step_hooks import LoraUse
from swiftdiffusion.runtime.transport.residual_source import ControlNetUse


@dataclass(frozen=True)
class GenerateParams:
    prompt: str
    seed: int
    steps: int
    guidance_scale: float
    width: int
    height: int
    negative_prompt: str = ""
    controlnets: tuple[ControlNetUse, ...] = ()
    loras: tuple[LoraUse, ...] = ()


@dataclass(frozen=True)
class Limits:
    max_width: int = 2048
    max_height: int = 2048
    min_size: int = 64
    max_steps: int = 200
    max_guidance_scale: float = 30.0
    max_controlnets: int = 8


def validate(params: GenerateParams, limits: Limits, controlnet_names: Collection[str] | None) -> None:
    """Raise InvalidArgument naming the first bad field, or NotFound for an unknown ControlNet."""
    for field, value, maximum in (("width", params.width, limits.max_width), ("height", params.height, limits.max_height)):
        if value % 8:
            raise InvalidArgument(field, f"{value} is not a multiple of 8")
        if not limits.min_size <= value <= maximum:
            raise InvalidArgument(field, f"{value} is outside [{limits.min_size}, {maximum}]")
    if not 1 <= params.steps <= limits.max_steps:
        raise InvalidArgument("steps", f"{params.steps} is outside [1, {limits.max_steps}]")
    if not (math.isfinite(params.guidance_scale) and 0.0 <= params.guidance_scale <= limits.max_guidance_scale):
        raise InvalidArgument("guidance_scale", f"{params.guidance_scale} is outside [0, {limits.max_guidance_scale}]")
    if len(params.controlnets) > limits.max_controlnets:
        raise InvalidArgument("controlnets", f"at most {limits.max_controlnets} per request")
    for index, use in enumerate(params.controlnets):
        if controlnet_names is not None and use.name not in controlnet_names:
            raise NotFound("ControlNet", use.name)
        if not (math.isfinite(use.conditioning_scale) and 0.0 <= use.conditioning_scale <= 10.0):
            raise InvalidArgument(f"controlnets[{index}].conditioning_scale", "must be within [0, 10]")
        decode_control_image(use.image, f"controlnets[{index}].image")
    for index, lora in enumerate(params.loras):
        if lora.k is not None and lora.k < 0:
            raise InvalidArgument(f"loras[{index}].k", "must be >= 0")
