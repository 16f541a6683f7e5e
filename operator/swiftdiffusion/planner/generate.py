"""Seeded synthetic traces: arrival shapes and the published request mix.

Shapes: `constant` (evenly spaced, for hand-checkable runs), `poisson`, `diurnal` (a
sinusoidal day, trough at t=0, by thinning) and `bursty` (a Poisson process whose rate is
multiplied by `burst_factor` for `burst_seconds` at Poisson-spaced burst starts).
"""
from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from swiftdiffusion.operator import model as m
from swiftdiffusion.planner.mix import Mix, controlnet_popularity
from swiftdiffusion.planner.trace import Request

SHAPES = ("constant", "poisson", "diurnal", "bursty")


@dataclass(frozen=True)
class Arrivals:
    shape: str = "poisson"
    rate: float = 1.0  # mean requests per second (the base rate for `bursty`)
    duration: float = 600.0
    diurnal_amplitude: float = 0.8
    diurnal_period: float = 86400.0
    burst_factor: float = 5.0
    burst_seconds: float = 60.0
    burst_interval: float = 600.0  # mean seconds between burst starts


def _poisson(rng: random.Random, rate: float, duration: float) -> Iterator[float]:
    t = rng.expovariate(rate)
    while t < duration:
        yield t
        t += rng.expovariate(rate)


def _bursts(rng: random.Random, a: Arrivals) -> list[tuple[float, float]]:
    return [(start, start + a.burst_seconds) for start in _poisson(rng, 1.0 / a.burst_interval, a.duration)]


def _rate(a: Arrivals, t: float, bursts: Sequence[tuple[float, float]]) -> float:
    """The instantaneous arrival rate of a `diurnal` or `bursty` shape at `t`."""
    if a.shape == "diurnal":
        return a.rate * (1 - a.diurnal_amplitude * math.cos(2 * math.pi * t / a.diurnal_period))
    return a.rate * (a.burst_factor if any(s <= t < e for s, e in bursts) else 1.0)


def arrival_times(a: Arrivals, rng: random.Random) -> list[float]:
    if a.shape not in SHAPES:
        raise ValueError(f"shape: {a.shape!r} is not one of {', '.join(SHAPES)}")
    if a.shape == "constant":
        return [i / a.rate for i in range(math.ceil(a.duration * a.rate))]
    if a.shape == "poisson":
        return list(_poisson(rng, a.rate, a.duration))
    bursts = _bursts(rng, a) if a.shape == "bursty" else []
    peak = a.rate * (1 + a.diurnal_amplitude if a.shape == "diurnal" else a.burst_factor)
    return [t for t in _poisson(rng, peak, a.duration) if rng.random() * peak < _rate(a, t, bursts)]


def _draw_count(rng: random.Random, shares: Sequence[float], cap: int) -> int:
    return min(rng.choices(range(len(shares)), weights=shares)[0], cap)


def _draw_without_replacement(rng: random.Random, names: Sequence[str], weights: Sequence[float],
                              count: int) -> tuple[str, ...]:
    pool, w, chosen = list(names), list(weights), []
    for _ in range(count):
        i = rng.choices(range(len(pool)), weights=w)[0]
        chosen.append(pool.pop(i))
        w.pop(i)
    return tuple(chosen)


def lora_catalogue(mix: Mix) -> list[str]:
    """Model-store names for the mix's distinct LoRAs (the runtime resolves any store name)."""
    return [f"lora-{i:05d}" for i in range(mix.distinct_loras)]


def requests(workflows: Sequence[m.Workflow], mix: Mix, arrivals: Arrivals, seed: int) -> list[Request]:
    """A trace over `workflows` (chosen uniformly per request) with the mix's add-ons.

    A request's ControlNets are drawn from its workflow's own (most popular first in
    declaration order), at most as many as it declares.
    """
    rng = random.Random(seed)
    loras = lora_catalogue(mix)
    popularity = {wf.name: controlnet_popularity(mix, len(wf.spec.controlnets)) for wf in workflows}
    out = []
    for t in arrival_times(arrivals, rng):
        wf = rng.choice(workflows)
        names = [cn.name for cn in wf.spec.controlnets]
        n_cn = _draw_count(rng, mix.controlnets_per_request, len(names))
        n_lora = _draw_count(rng, mix.loras_per_request, len(loras))
        d = wf.spec.base.defaults
        out.append(Request(t, wf.name, _draw_without_replacement(rng, names, popularity[wf.name], n_cn),
                           tuple(rng.sample(loras, n_lora)), d.steps, d.width, d.height))
    return out
