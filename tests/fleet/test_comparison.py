"""The calibration's verdict: each bound of issue 13 the simulation misses, named."""
from __future__ import annotations

from tests.fleet.calibration import Comparison


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
