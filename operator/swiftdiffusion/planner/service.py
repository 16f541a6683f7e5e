"""How long one request holds a base replica, from the profile: pure arithmetic.

Decoupled (SwiftDiffusion): per step the UNet encoder and the ControlNets start together;
the decoder waits for the residuals, so a step is max(encoder + exchange, ControlNets +
transfer) + decoder, where the exchange is the base replica's own work on sending the latent
and taking in the residuals (on one device with the encoder, it does not overlap it).
ControlNets run one after another on their pod, slowed by the other sessions that pod
serves (`controlnet_slowdown`). LoRAs load in BAL's background: LoRA i (loaded one
after another) is needed before step K_i; what it is late by blocks the loop.
Monolithic (diffusers): the ControlNets run on the base GPU, serially, every step, and
LoRAs are loaded and fused before the loop.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from swiftdiffusion.operator import model as m
from swiftdiffusion.planner.profile import Profile
from swiftdiffusion.planner.trace import Request


@dataclass(frozen=True, slots=True)
class Work:
    """One request as the base replica sees it."""

    steps: int
    pixels: int
    controlnets: int
    lora_ks: Sequence[int]  # each LoRA's BAL bound, in load order
    controlnet_misses: int = 0
    latent_parallel: bool = False


@dataclass(frozen=True, slots=True)
class Timing:
    seconds: float
    lora_blocked_seconds: float = 0.0


def _scale(p: Profile, w: Work) -> float:
    return w.pixels / (p.reference_width * p.reference_height)


def _base_step(p: Profile, w: Work) -> float:
    return p.base_step_seconds * _scale(p, w) / (p.latent_parallel_speedup if w.latent_parallel else 1.0)


def controlnet_share(p: Profile, w: Work) -> float:
    """The share of a ControlNet pod's time one session of `w` takes (its load on the pod)."""
    if not w.controlnets:
        return 0.0
    return w.controlnets * p.controlnet_step_seconds * _scale(p, w) / decoupled_step(p, w, 1.0)


@dataclass(frozen=True, slots=True)
class Decoupled:
    """`decoupled` for one `Work`, with all that does not depend on the ControlNet slowdown
    computed once (a simulation asks again at every slowdown its ControlNet pod is at)."""

    profile: Profile
    work: Work
    base: float  # one base step, both UNet halves
    controlnets: float  # the request's ControlNets for one step, unslowed
    before_loop: float  # outside the loop: fixed time, ControlNet sessions opened, cache misses

    @classmethod
    def of(cls, p: Profile, w: Work) -> Decoupled:
        scale = _scale(p, w)
        return cls(p, w, _base_step(p, w), w.controlnets * p.controlnet_step_seconds * scale,
                   (p.fixed_seconds + w.controlnets * p.controlnet_open_seconds) * scale
                   + w.controlnet_misses * p.controlnet_load_seconds)

    def step(self, controlnet_slowdown: float) -> float:
        if not self.work.controlnets:
            return self.base
        p = self.profile
        cn = self.controlnets * controlnet_slowdown + p.residual_transfer_seconds
        return (max(self.base * p.encoder_fraction + p.residual_exchange_seconds, cn)
                + self.base * (1 - p.encoder_fraction))

    def timing(self, controlnet_slowdown: float = 1.0) -> Timing:
        step = self.step(controlnet_slowdown)
        blocked = bal_blocked(self.profile, self.work.lora_ks, step)
        seconds = (self.before_loop + self.work.steps * step + blocked
                   + len(self.work.lora_ks) * self.profile.lora_merge_seconds)
        return Timing(seconds, blocked)


def decoupled_step(p: Profile, w: Work, controlnet_slowdown: float) -> float:
    return Decoupled.of(p, w).step(controlnet_slowdown)


def bal_blocked(p: Profile, lora_ks: Sequence[int], step: float) -> float:
    """Seconds the loop waits at the K of a LoRA still loading (loads back to back)."""
    blocked = 0.0
    for i, k in enumerate(lora_ks):
        ready = (i + 1) * p.lora_load_seconds
        blocked = max(blocked, ready - k * step)
    return blocked


def decoupled(p: Profile, w: Work, controlnet_slowdown: float = 1.0) -> Timing:
    return Decoupled.of(p, w).timing(controlnet_slowdown)


def cpu_seconds(p: Profile, w: Work, timing: Timing, controlnet_slowdown: float = 1.0) -> float:
    """The compute a decoupled request keeps busy while it holds its replica: the base replica
    except while it waits for residuals, plus its ControlNets on their pod."""
    if not w.controlnets:
        return timing.seconds
    waiting = w.steps * max(0.0, decoupled_step(p, w, controlnet_slowdown) - _base_step(p, w)
                            - p.residual_exchange_seconds)
    return timing.seconds - waiting + w.steps * w.controlnets * p.controlnet_step_seconds * _scale(p, w)


def monolithic(p: Profile, w: Work) -> Timing:
    scale = _scale(p, w)
    step = _base_step(p, w) + w.controlnets * p.controlnet_step_seconds * scale
    return Timing(p.fixed_seconds * scale + w.controlnet_misses * p.controlnet_load_seconds + w.steps * step
                  + len(w.lora_ks) * p.monolithic_lora_seconds)


@dataclass(frozen=True)
class WorkflowWork:
    """What a workflow fixes about every request's work, computed once per workflow."""

    declared_ks: Mapping[str, int | None]  # the declared LoRAs' own `k`
    default_k: int  # `balDefaultK`
    latent_parallel: bool

    @classmethod
    def of(cls, wf: m.Workflow) -> WorkflowWork:
        return cls({lora.name: lora.k for lora in wf.spec.loras}, wf.spec.serving.bal_default_k,
                   wf.spec.serving.latent_parallelism == m.LatentParallelism.ENABLED)

    def lora_ks(self, names: Sequence[str]) -> tuple[int, ...]:
        """LoRA i's BAL bound: its own `k`, else `balDefaultK` (LoRAs not declared are resolved
        from the store and take the default)."""
        if self.declared_ks.keys().isdisjoint(names):
            return (self.default_k,) * len(names)
        return tuple(self.declared_ks.get(name) or self.default_k for name in names)

    def work(self, steps: int, pixels: int, controlnets: int, lora_ks: tuple[int, ...],
             controlnet_misses: int = 0) -> Work:
        return Work(steps, pixels, controlnets, lora_ks, controlnet_misses, self.latent_parallel)


def request_work(wf: m.Workflow, request: Request, controlnet_misses: int = 0) -> Work:
    """What `request` asks of its base replica."""
    per_workflow = WorkflowWork.of(wf)
    return per_workflow.work(request.steps, request.width * request.height, len(request.controlnets),
                             per_workflow.lora_ks(request.loras), controlnet_misses)
