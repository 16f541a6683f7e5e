"""The Katz paper's published production mix (../shared/DESIGN.md section 1) as data.

The paper gives shares, not distributions: ControlNets and LoRAs per request, the number
of distinct models, and how concentrated ControlNet calls are (top-k share). ControlNet
popularity is modelled as Zipf over the catalogue with the exponent that sends
`top_share` of the calls to the top `top_k`; LoRA popularity as uniform over
`distinct_loras` (every LoRA then takes under 1% of calls; the paper reports 99.8% do).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cache


@dataclass(frozen=True)
class Mix:
    name: str
    controlnets_per_request: tuple[float, ...]  # share of requests with 0, 1, 2, 3 ControlNets
    loras_per_request: tuple[float, ...]  # share with 0, 1, 2 LoRAs
    distinct_controlnets: int
    top_k: int
    top_share: float
    distinct_loras: int


SERVICE_A = Mix("A", (0.0, 0.305, 0.695, 0.0), (0.002, 0.088, 0.91), 47, 5, 0.98, 6980)
SERVICE_B = Mix("B", (0.019, 0.251, 0.699, 0.031), (0.072, 0.736, 0.192), 94, 8, 0.95, 7463)
MIXES = {mix.name: mix for mix in (SERVICE_A, SERVICE_B)}


def zipf_weights(n: int, exponent: float) -> list[float]:
    raw = [1.0 / (rank ** exponent) for rank in range(1, n + 1)]
    total = sum(raw)
    return [w / total for w in raw]


def top_call_share(weights: list[float], top_k: int, per_request: tuple[float, ...]) -> float:
    """The expected share of ControlNet calls that go to the top `top_k` when a request with
    c ControlNets draws c distinct ones by weight (one after another, without replacement)."""
    top = [i < top_k for i in range(len(weights))]
    first = sum(w for w, t in zip(weights, top) if t)
    second = sum(w * (first - w * t) / (1 - w) for w, t in zip(weights, top))
    third = 0.0
    if len(per_request) > 3 and per_request[3]:
        for i, (wi, ti) in enumerate(zip(weights, top)):
            for j, (wj, tj) in enumerate(zip(weights, top)):
                if i != j and wi + wj < 1:
                    third += wi * wj / (1 - wi) * (first - wi * ti - wj * tj) / (1 - wi - wj)
    expected = (first, first + second, first + second + third)
    calls = sum(share * c for c, share in enumerate(per_request))
    return sum(share * expected[c - 1] for c, share in enumerate(per_request) if c) / calls


@cache
def fitted_exponent(mix: Mix) -> float:
    """The Zipf exponent that gives the mix's published top-k share of calls (bisection: the
    share grows with the exponent)."""
    low, high = 0.0, 20.0
    for _ in range(40):
        mid = (low + high) / 2
        share = top_call_share(zipf_weights(mix.distinct_controlnets, mid), mix.top_k, mix.controlnets_per_request)
        low, high = (mid, high) if share < mix.top_share else (low, mid)
    return (low + high) / 2


def controlnet_popularity(mix: Mix, n: int) -> list[float]:
    """Weights of a catalogue of `n` ControlNets, most popular first, with the concentration
    fitted on the mix's own catalogue size."""
    return zipf_weights(n, fitted_exponent(mix))
