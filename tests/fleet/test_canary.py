"""The speed canary's readings as the calibration turns them into the simulator's slowdown."""
from __future__ import annotations

import pytest

from tests.fleet.canary import WINDOW_SECONDS, Readings


def readings(*pairs: tuple[float, float]) -> Readings:
    out = Readings()
    for moment, seconds in sorted(pairs):  # the canary reports in time order
        out.add(moment, seconds)
    return out


def test_the_slowdown_at_a_moment_is_the_median_reading_around_it_against_the_baseline() -> None:
    # A reading a second from 1000 s (wall clock) on: 0.2 s, then 0.3 s from 1020 s on, one outlier.
    canary = readings(*[(1000.0 + i, 0.2 if i < 20 else 0.3) for i in range(40)], (1010.5, 5.0))
    slowdown = canary.slowdown(baseline=0.2, origin=1000.0)
    assert slowdown(10.0) == pytest.approx(1.0)  # the outlier is one reading of eleven
    assert slowdown(30.0) == pytest.approx(1.5)
    assert slowdown(19.5) == pytest.approx(1.25)  # five readings either side of the change
    assert canary.median(1000.0, 1019.0) == pytest.approx(0.2)


def test_without_readings_near_a_moment_the_profile_speed_stands() -> None:
    canary = readings((1000.0, 0.4))
    slowdown = canary.slowdown(baseline=0.2, origin=1000.0)
    assert slowdown(0.0) == pytest.approx(2.0)
    assert slowdown(WINDOW_SECONDS + 1.0) == 1.0
    assert canary.median(2000.0, 3000.0) is None


def test_a_profile_step_is_set_against_the_readings_at_its_own_moments() -> None:
    # The machine is twice as slow from 1100 s on; the profile's three steps, two of them slow:
    # their median is a slow step, which stands for a slow reading, not the span's fast median.
    canary = readings(*[(1000.0 + i, 0.2 if i < 100 else 0.4) for i in range(200)])
    steps = [((1010.0, 1012.0), 0.1), ((1150.0, 1152.0), 0.2), ((1180.0, 1182.0), 0.2)]
    assert canary.median(1000.0, 1199.0) == pytest.approx(0.3)
    assert canary.reading_at(steps) == pytest.approx(0.4)
    # Steps 10% shorter at the same moments are a faster service, not a faster machine.
    assert canary.reading_at([(span, seconds * 0.9) for span, seconds in steps]) == pytest.approx(0.4)
    assert readings((5000.0, 0.4)).reading_at(steps) is None
