"""Seeded synthetic traces: arrival shapes and the published request mix.

Shapes: `constant` (evenly spaced, for hand-checkable runs), `poisson`, `diurnal` (a
sinusoidal day, trough at t=0, by thinning) and `bursty` (a Poisson process whose rate is
multiplied by `burst_factor` for `burst_seconds` at Poisson-spaced burst starts).

A trace is one seeded random stream: every arrival time first, then each request's
add-ons. `stream` yields the same trace lazily, in memory that does not grow with its
length: it runs the arrival process once to find where the add-on draws begin (keeping
nothing), then again beside them.
"""
from __future__ import annotations

import math
import random
from bisect import bisect
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import accumulate

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


def _thinned(rng: random.Random, peak: float, duration: float, rate: Callable[[float], float]) -> Iterator[float]:
    """A Poisson process of rate `peak`, each arrival kept with probability rate(t) / peak
    (Lewis-Shedler thinning: a process whose rate varies as `rate`)."""
    expovariate, random_ = rng.expovariate, rng.random
    t = expovariate(peak)
    while t < duration:
        if random_() * peak < rate(t):
            yield t
        t += expovariate(peak)


def _rate(a: Arrivals, bursts: Sequence[tuple[float, float]]) -> Callable[[float], float]:
    """The instantaneous arrival rate of a `diurnal` or `bursty` shape."""
    rate, amplitude, period, factor, two_pi, cos = (a.rate, a.diurnal_amplitude, a.diurnal_period, a.burst_factor,
                                                    2 * math.pi, math.cos)
    if a.shape == "diurnal":
        return lambda t: rate * (1 - amplitude * cos(two_pi * t / period))
    return lambda t: rate * (factor if any(s <= t < e for s, e in bursts) else 1.0)


def _check(a: Arrivals) -> None:
    if a.shape not in SHAPES:
        raise ValueError(f"shape: {a.shape!r} is not one of {', '.join(SHAPES)}")


def _arrivals(a: Arrivals, rng: random.Random) -> Iterator[float]:
    if a.shape == "constant":
        return (i / a.rate for i in range(math.ceil(a.duration * a.rate)))
    if a.shape == "poisson":
        return _poisson(rng, a.rate, a.duration)
    bursts = []
    if a.shape == "bursty":
        bursts = [(start, start + a.burst_seconds) for start in _poisson(rng, 1.0 / a.burst_interval, a.duration)]
    peak = a.rate * (1 + a.diurnal_amplitude if a.shape == "diurnal" else a.burst_factor)
    return _thinned(rng, peak, a.duration, _rate(a, bursts))


def arrival_times(a: Arrivals, rng: random.Random) -> list[float]:
    _check(a)
    return list(_arrivals(a, rng))


def _draw(rng: random.Random, cumulative: Sequence[float]) -> int:
    """An index drawn by weight: what `rng.choices(range(n), weights)[0]` returns, given the
    weights' running sums (computed once instead of per draw)."""
    return bisect(cumulative, rng.random() * (cumulative[-1] + 0.0), 0, len(cumulative) - 1)


class _Catalogue:
    """Names drawn by weight without replacement; what is left after each draw is computed once."""

    def __init__(self, names: Sequence[str], weights: Sequence[float]) -> None:
        self.names, self.weights, self.cumulative = names, weights, list(accumulate(weights))
        self._without: dict[int, _Catalogue] = {}

    def _less(self, i: int) -> _Catalogue:
        rest = self._without.get(i)
        if rest is None:
            rest = self._without[i] = _Catalogue([*self.names[:i], *self.names[i + 1:]],
                                                 [*self.weights[:i], *self.weights[i + 1:]])
        return rest

    def draw(self, rng: random.Random, count: int) -> tuple[str, ...]:
        chosen, catalogue = [], self
        for left in range(count - 1, -1, -1):
            i = _draw(rng, catalogue.cumulative)
            chosen.append(catalogue.names[i])
            if left:
                catalogue = catalogue._less(i)
        return tuple(chosen)


def lora_catalogue(mix: Mix) -> list[str]:
    """Model-store names for the mix's distinct LoRAs (the runtime resolves any store name)."""
    return [f"lora-{i:05d}" for i in range(mix.distinct_loras)]


@dataclass(frozen=True)
class _Drawn:
    """What every request of one workflow draws from, computed once."""

    name: str
    controlnets: _Catalogue
    steps: int
    width: int
    height: int


def _drawn(wf: m.Workflow, mix: Mix) -> _Drawn:
    d = wf.spec.base.defaults
    return _Drawn(wf.name, _Catalogue([cn.name for cn in wf.spec.controlnets],
                                      controlnet_popularity(mix, len(wf.spec.controlnets))),
                  d.steps, d.width, d.height)


def stream(workflows: Sequence[m.Workflow], mix: Mix, arrivals: Arrivals, seed: int) -> Iterator[Request]:
    """The trace `requests` returns, one request at a time (see the module's docstring)."""
    _check(arrivals)
    addons = random.Random(seed)
    for _ in _arrivals(arrivals, addons):
        pass
    return _stream(workflows, mix, arrivals, random.Random(seed), addons)


def _stream(workflows: Sequence[m.Workflow], mix: Mix, arrivals: Arrivals, times: random.Random,
            rng: random.Random) -> Iterator[Request]:
    loras = lora_catalogue(mix)
    drawn = [_drawn(wf, mix) for wf in workflows]
    cn_counts, lora_counts = list(accumulate(mix.controlnets_per_request)), list(accumulate(mix.loras_per_request))
    for t in _arrivals(arrivals, times):
        wf = rng.choice(drawn)
        n_cn = min(_draw(rng, cn_counts), len(wf.controlnets.names))
        n_lora = min(_draw(rng, lora_counts), len(loras))
        yield Request(t, wf.name, wf.controlnets.draw(rng, n_cn), tuple(rng.sample(loras, n_lora)), wf.steps,
                      wf.width, wf.height)


def requests(workflows: Sequence[m.Workflow], mix: Mix, arrivals: Arrivals, seed: int) -> list[Request]:
    """A trace over `workflows` (chosen uniformly per request) with the mix's add-ons.

    A request's ControlNets are drawn from its workflow's own (most popular first in
    declaration order), at most as many as it declares.
    """
    return list(stream(workflows, mix, arrivals, seed))
