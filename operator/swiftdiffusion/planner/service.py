"""How long one request holds a base replica, from the profile: pure arithmetic.

Decoupled (SwiftDiffusion): per step the UNet encoder and the ControlNets start together;
the decoder waits for the residuals, so a step is max(encoder, ControlNets + transfer) +
decoder. ControlNets run one after another on their pod, slowed by the other sessions that
pod serves (`controlnet_slowdown`). LoRAs load in BAL's background: LoRA i (loaded one
after another) is needed before step K_i; what it is late by blocks the loop.
Monolithic (diffusers): the ControlNets run on the base GPU, serially, every step, and
LoRAs are loaded and fused before the loop.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from swiftdiffusion.operator import model as m
from swiftdiffusion.planner.profile import Profile
from swiftdiffusion.planner.trace import Request


@dataclass(frozen=True)
class Work:
    """One request as the base replica sees it."""

    steps: int
    pixels: int
    controlnets: int
    lora_ks: Sequence[int]  # each LoRA's BAL bound, in load order
    controlnet_misses: int = 0
    latent_parallel: bool = False


@dataclass(frozen=True)
class Timing:
    seconds: float
    lora_blocked_seconds: float = 0.0


def _base_step(p: Profile, w: Work) -> float:
    scale = w.pixels / (p.reference_width * p.reference_height)
    return p.base_step_seconds * scale / (p.latent_parallel_speedup if w.latent_parallel else 1.0)


def controlnet_share(p: Profile, w: Work) -> float:
    """The share of a ControlNet pod's time one session of `w` takes (its load on the pod)."""
    if not w.controlnets:
        return 0.0
    scale = w.pixels / (p.reference_width * p.reference_height)
    cn = w.controlnets * p.controlnet_step_seconds * scale
    return cn / decoupled_step(p, w, 1.0)


def decoupled_step(p: Profile, w: Work, controlnet_slowdown: float) -> float:
    base = _base_step(p, w)
    if not w.controlnets:
        return base
    scale = w.pixels / (p.reference_width * p.reference_height)
    cn = w.controlnets * p.controlnet_step_seconds * scale * controlnet_slowdown + p.residual_transfer_seconds
    return max(base * p.encoder_fraction, cn) + base * (1 - p.encoder_fraction)


def bal_blocked(p: Profile, lora_ks: Sequence[int], step: float) -> float:
    """Seconds the loop waits at the K of a LoRA still loading (loads back to back)."""
    blocked = 0.0
    for i, k in enumerate(lora_ks):
        ready = (i + 1) * p.lora_load_seconds
        blocked = max(blocked, ready - k * step)
    return blocked


def decoupled(p: Profile, w: Work, controlnet_slowdown: float = 1.0) -> Timing:
    scale = w.pixels / (p.reference_width * p.reference_height)
    step = decoupled_step(p, w, controlnet_slowdown)
    blocked = bal_blocked(p, w.lora_ks, step)
    seconds = ((p.fixed_seconds + w.controlnets * p.controlnet_open_seconds) * scale
               + w.controlnet_misses * p.controlnet_load_seconds + w.steps * step
               + blocked + len(w.lora_ks) * p.lora_merge_seconds)
    return Timing(seconds, blocked)


def cpu_seconds(p: Profile, w: Work, timing: Timing, controlnet_slowdown: float = 1.0) -> float:
    """The compute a decoupled request keeps busy while it holds its replica: the base replica
    except while it waits for residuals, plus its ControlNets on their pod."""
    if not w.controlnets:
        return timing.seconds
    scale = w.pixels / (p.reference_width * p.reference_height)
    waiting = w.steps * (decoupled_step(p, w, controlnet_slowdown) - _base_step(p, w))
    return timing.seconds - waiting + w.steps * w.controlnets * p.controlnet_step_seconds * scale


def monolithic(p: Profile, w: Work) -> Timing:
    scale = w.pixels / (p.reference_width * p.reference_height)
    step = _base_step(p, w) + w.controlnets * p.controlnet_step_seconds * scale
    return Timing(p.fixed_seconds * scale + w.controlnet_misses * p.controlnet_load_seconds + w.steps * step
                  + len(w.lora_ks) * p.monolithic_lora_seconds)


def request_work(wf: m.Workflow, request: Request, controlnet_misses: int = 0) -> Work:
    """What `request` asks of its base replica: LoRA i's BAL bound is its own `k`, else the
    workflow's `balDefaultK` (LoRAs not declared are resolved from the store and take the default)."""
    declared = {lora.name: lora.k for lora in wf.spec.loras}
    ks = [declared.get(name) or wf.spec.serving.bal_default_k for name in request.loras]
    return Work(request.steps, request.width * request.height, len(request.controlnets), ks,
                controlnet_misses, wf.spec.serving.latent_parallelism == m.LatentParallelism.ENABLED)
