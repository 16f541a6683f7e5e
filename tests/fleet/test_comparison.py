"""The calibration's verdict: each bound of issue 13 the simulation misses, named."""
from __future__ import annotations

import pytest

from tests.fleet.calibration import Comparison, FleetRun, compare_runs, counted_since


def comparison(**changes: object) -> Comparison:
    fields = dict(real_p50=10.0, real_p95=30.0, sim_p50=11.9, sim_p95=24.1, real_hits=0.40, sim_hits=0.36,
                  replicas={"base": [(30, 1, 1), (60, 3, 2)], "cn": [(30, 1, 1), (60, 2, 2)]})
    return Comparison(**(fields | changes))


def test_a_simulation_within_every_bound_misses_nothing() -> None:
    assert comparison().misses() == []


def test_each_bound_missed_is_named_with_how_far() -> None:
    off = comparison(sim_p50=12.1, sim_p95=23.9, sim_hits=0.349,
                     replicas={"base": [(30, 1, 1), (60, 3, 1)], "cn": [(30, 1, 1)]}).misses()
    assert off == ["base replicas at 60 s: fleet 3, simulated 1", "cache hits -5.1 points", "p50 +21.0%", "p95 -20.3%"]


def test_a_second_replay_is_set_against_the_first_as_the_simulation_is() -> None:
    first = FleetRun(latencies=[(t, 2.0 + t / 10) for t in range(10)], lookups={"cn-a": (3, 7)},
                     replicas={"base": [(0.0, 1), (40.0, 3), (100.0, 1)]})
    second = FleetRun(latencies=[(t, 2.0 + t / 5) for t in range(10)], lookups={"cn-a": (5, 5), "cn-b": (1, 9)},
                      replicas={"base": [(0.0, 1), (62.0, 2), (95.0, 1)]})
    against = compare_runs(first, second, duration=90)
    # Nearest rank of ten: the 5th and the 10th.
    assert (against.real_p50, against.sim_p50, against.real_p95, against.sim_p95) == pytest.approx((2.4, 2.8, 2.9, 3.8))
    assert (against.real_hits, against.sim_hits) == pytest.approx((0.3, 0.3))  # 3 of 10; 6 of 20
    # At 60 s the first replay had 3 replicas and the second still 1; at 90 s 3 and 2.
    assert against.replicas["base"] == [(30, 1, 1), (60, 3, 1), (90, 3, 2)]
    assert against.misses(real="first", sim="second") == ["base replicas at 60 s: first 3, second 1", "p95 +31.0%"]
    assert against.lines("first", "second")[0] == "p50 2.40 s first, 2.80 s second (+17%)"


def test_a_pod_that_served_an_earlier_replay_counts_only_this_one() -> None:
    before = {"cn-kept": ((20.0, 30.0), (30.0, 9.0))}
    now = {"cn-kept": ((26.0, 41.0), (41.0, 12.5)), "cn-new": ((1.0, 2.0), (2.0, 0.5))}
    assert counted_since(now, before) == {"cn-kept": ((6.0, 11.0), (11.0, 3.5)), "cn-new": ((1.0, 2.0), (2.0, 0.5))}
