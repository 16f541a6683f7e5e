"""Generated traces carry the paper's published statistics (DESIGN.md section 1)."""
from __future__ import annotations

import random
from collections import Counter

import pytest

from swiftdiffusion.planner import generate, mix
from tests.planner.helpers import workflow

SAMPLE = 20_000


def sample(service: mix.Mix) -> list:
    wf = workflow("w", controlnets=tuple(f"cn{i:02d}" for i in range(service.distinct_controlnets)))
    return generate.requests([wf], service, generate.Arrivals(shape="constant", rate=100.0, duration=SAMPLE / 100),
                             seed=7)


def shares(counts: Counter, n: int, size: int) -> list[float]:
    return [counts[i] / n for i in range(size)]


@pytest.mark.parametrize("service", [mix.SERVICE_A, mix.SERVICE_B], ids=lambda s: s.name)
def test_add_ons_per_request_match_the_published_shares(service: mix.Mix) -> None:
    requests = sample(service)
    assert len(requests) == SAMPLE
    cn = shares(Counter(len(r.controlnets) for r in requests), SAMPLE, 4)
    lora = shares(Counter(len(r.loras) for r in requests), SAMPLE, 3)
    assert cn == pytest.approx(service.controlnets_per_request, abs=0.015)
    assert lora == pytest.approx(service.loras_per_request, abs=0.015)


@pytest.mark.parametrize("service", [mix.SERVICE_A, mix.SERVICE_B], ids=lambda s: s.name)
def test_controlnet_calls_are_as_concentrated_as_published(service: mix.Mix) -> None:
    calls = Counter(cn for r in sample(service) for cn in r.controlnets)
    top = sum(n for _, n in calls.most_common(service.top_k))
    assert top / sum(calls.values()) == pytest.approx(service.top_share, abs=0.02)


def test_lora_popularity_is_flat() -> None:
    calls = Counter(lora for r in sample(mix.SERVICE_A) for lora in r.loras)
    total = sum(calls.values())
    assert max(calls.values()) / total < 0.01  # every LoRA under 1% of calls (published: 99.8% of them)
    assert len(calls) > 0.9 * mix.SERVICE_A.distinct_loras  # ~34k calls reach nearly all of the 6,980


def test_a_seed_makes_the_same_trace_and_another_seed_a_different_one() -> None:
    wf = workflow("w", controlnets=("a", "b"))
    arrivals = generate.Arrivals(rate=2.0, duration=100.0)
    assert generate.requests([wf], mix.SERVICE_B, arrivals, 3) == generate.requests([wf], mix.SERVICE_B, arrivals, 3)
    assert generate.requests([wf], mix.SERVICE_B, arrivals, 3) != generate.requests([wf], mix.SERVICE_B, arrivals, 4)


def test_poisson_arrivals_have_the_asked_rate() -> None:
    times = generate.arrival_times(generate.Arrivals(rate=5.0, duration=2000.0), random.Random(1))
    assert len(times) == pytest.approx(10_000, abs=300)  # 3 standard deviations of a Poisson count
    assert times == sorted(times)


def test_diurnal_arrivals_peak_at_mid_period() -> None:
    a = generate.Arrivals(shape="diurnal", rate=2.0, duration=1000.0, diurnal_period=1000.0, diurnal_amplitude=0.8)
    times = generate.arrival_times(a, random.Random(2))
    middle = sum(250 <= t < 750 for t in times)
    # rate 2 (1 - 0.8 cos): the middle half holds (1/2 + 0.8/pi) of the ~2000 arrivals
    assert middle / len(times) == pytest.approx(0.5 + 0.8 / 3.14159, abs=0.03)
    assert len(times) == pytest.approx(2000, abs=150)


def test_bursty_arrivals_crowd_into_bursts() -> None:
    a = generate.Arrivals(shape="bursty", rate=1.0, duration=5000.0, burst_factor=10.0, burst_seconds=50.0,
                          burst_interval=500.0)
    rng = random.Random(3)
    times = generate.arrival_times(a, rng)
    busiest = max(Counter(int(t // 50) for t in times).values())
    assert busiest > 5 * 50 * a.rate  # a 50 s window in a burst sees ~10x the base rate
