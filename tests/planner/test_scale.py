"""Long traces: streamed requests, bounded outcomes, histogram percentiles within their stated error."""
from __future__ import annotations

import random
import tracemalloc
from pathlib import Path

import pytest

from swiftdiffusion.operator import model as m
from swiftdiffusion.planner import fleet, generate, latency, mix, report
from swiftdiffusion.planner.latency import RATIO, RELATIVE_ERROR, ExactLatencies, LatencyHistogram
from swiftdiffusion.planner.simulate import Simulation, SimulationError
from swiftdiffusion.planner.trace import Request
from tests.planner.helpers import PROFILE, workflow

SCALED = {"autoscaling": {"enabled": True, "minReplicas": 1, "maxReplicas": 4, "targetInFlightPerReplica": 1,
                          "scaleDownStabilizationSeconds": 30}}
WORKFLOWS = [workflow("a", controlnets=("canny", "depth"), base_pool=SCALED,
                      controlnet_pool={"sharedPoolName": "s", **SCALED}, bal_k=2),
             workflow("b", controlnets=("depth", "pose"), created=1, base_pool=SCALED,
                      controlnet_pool={"sharedPoolName": "s", **SCALED}, loras=({"name": "ink", "source": "/l", "k": 1},)),
             workflow("c", created=2, base_pool={"replicas": 2})]


def simulation() -> Simulation:
    return Simulation(fleet.build(WORKFLOWS), WORKFLOWS, PROFILE)


def trace(duration: float, shape: str = "bursty") -> generate.Arrivals:
    return generate.Arrivals(shape=shape, rate=1.0, duration=duration, burst_seconds=30, burst_interval=300)


def test_a_streamed_trace_replays_as_the_same_trace_in_a_list() -> None:
    arrivals = trace(1800)
    listed = simulation().run(generate.requests(WORKFLOWS, mix.SERVICE_A, arrivals, 1))
    streamed = simulation().run(generate.stream(WORKFLOWS, mix.SERVICE_A, arrivals, 1))
    assert len(listed.outcomes) > 1000 and listed.lora_blocked_requests > 0
    assert streamed.outcomes == listed.outcomes
    assert (streamed.events, streamed.end, streamed.cache_hits) == (listed.events, listed.end, listed.cache_hits)
    assert {name: state.timeline for name, state in streamed.pools.items()} == {
        name: state.timeline for name, state in listed.pools.items()}
    assert report.summary(streamed, 10.0) == report.summary(listed, 10.0)


def test_without_outcomes_the_summary_is_the_exact_one_within_the_histograms_error() -> None:
    arrivals = trace(1800)
    exact = report.summary(simulation().run(generate.requests(WORKFLOWS, mix.SERVICE_A, arrivals, 1)), 10.0)
    result = simulation().run(generate.stream(WORKFLOWS, mix.SERVICE_A, arrivals, 1), keep_outcomes=False)
    assert result.outcomes is None
    binned = report.summary(result, 10.0)
    for key in ("requests", "events", "simulated_seconds", "gpu_hours", "peak_gpus", "controlnet_cache_hit_rate",
                "lora_blocked_requests", "pools"):
        assert binned[key] == exact[key], key
    assert binned["lora_blocked_seconds"] == pytest.approx(exact["lora_blocked_seconds"])  # summed in another order
    for name, workflow_summary in exact["workflows"].items():
        for q in ("p50", "p95", "p99"):
            assert binned["workflows"][name][q] == pytest.approx(workflow_summary[q], rel=RELATIVE_ERROR)
    assert binned["p95"] == pytest.approx(exact["p95"], rel=RELATIVE_ERROR)


def test_histogram_percentiles_are_within_the_stated_error_of_exact_ones() -> None:
    rng = random.Random(4)
    values = [rng.lognormvariate(1.5, 1.0) for _ in range(20_000)] + [0.0005, 2e6]  # and one past each end
    histogram = LatencyHistogram()
    for value in values:
        histogram.add(value)
    exact = ExactLatencies(values)
    assert histogram.count == exact.count
    for q in (0, 1, 10, 50, 90, 95, 99, 99.9, 100):
        assert histogram.percentile(q) == pytest.approx(exact.percentile(q), rel=RELATIVE_ERROR), q
    for slo in (1.0, 4.5, 10.0, 60.0):
        near = sum(slo < v <= slo * RATIO for v in values) / len(values)  # may count as met: the SLO's own bin
        assert exact.within(slo) <= histogram.within(slo) <= exact.within(slo) + near
    halves = [LatencyHistogram(), LatencyHistogram()]
    for i, value in enumerate(values):
        halves[i % 2].add(value)
    whole = latency.merged(halves)
    assert (whole.count, whole.percentile(95)) == (histogram.count, histogram.percentile(95))


def _peak_bytes(duration: float, keep_outcomes: bool) -> int:
    """The most memory a run of a generated trace allocates, trace included. The pools keep
    their replicas: a replica that comes and goes leaves its lifetime and a timeline entry."""
    pool = {"autoscaling": m.Autoscaling(), "replicas": 3}  # well above the load: no backlog builds up
    fixed = [fleet.with_spec(wf, base_pool=pool, controlnet_pool=pool) for wf in WORKFLOWS]
    sim = Simulation(fleet.build(fixed), fixed, PROFILE)
    requests = generate.stream(fixed, mix.SERVICE_A, trace(duration, "poisson"), 2)
    tracemalloc.start()
    try:
        sim.run(requests, keep_outcomes=keep_outcomes)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_does_not_grow_with_a_streamed_trace() -> None:
    kept = _peak_bytes(1000, True), _peak_bytes(2000, True)
    streamed = _peak_bytes(1000, False), _peak_bytes(2000, False)
    assert kept[1] - kept[0] > 100_000  # every outcome kept: ~1,000 more requests, ~1,000 more outcomes
    assert streamed[1] - streamed[0] < 0.05 * (kept[1] - kept[0])


def test_requests_out_of_arrival_order_are_refused() -> None:
    requests = [Request(5.0, "c", (), (), 10, 64, 64), Request(4.0, "c", (), (), 10, 64, 64)]
    with pytest.raises(SimulationError, match="request 1 arrives at 4.0 s, before the one before it"):
        simulation().run(iter(requests))


def test_a_run_without_outcomes_writes_its_summary_and_plots_but_no_requests_csv(tmp_path: Path) -> None:
    result = simulation().run(generate.stream(WORKFLOWS, mix.SERVICE_A, trace(300), 3), keep_outcomes=False)
    written = report.write(tmp_path, result, report.summary(result, 10.0))
    assert {p.name for p in written} == {"summary.json", "replicas.csv", "latency.png", "replicas.png"}
    assert not (tmp_path / "requests.csv").exists()
