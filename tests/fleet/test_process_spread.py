"""The process-spread tool's arithmetic (`process_spread.py`): a service's own speed is told
from the rounds' drift and noise."""
from __future__ import annotations

import random

import pytest

from tests.fleet.process_spread import ProcessSpread


def rounds(offsets: list[float], noise: float, seed: int = 0, count: int = 12) -> list[list[float]]:
    rng = random.Random(seed)
    machine = [1.0 + 0.2 * rng.random() for _ in range(count)]  # the drift every service shares in a round
    return [[0.1 * m * o * (1.0 + rng.gauss(0.0, noise)) for o in offsets] for m in machine]


def test_a_process_that_keeps_its_speed_is_found_through_the_machines_drift() -> None:
    spread = ProcessSpread.of(rounds([1.0, 1.0, 1.04, 1.0, 0.96, 1.0], noise=0.005))
    offsets = spread.offsets()
    assert offsets[2] == pytest.approx(1.04, abs=0.01) and offsets[4] == pytest.approx(0.96, abs=0.01)
    assert spread.between() > 2 * spread.within()
    assert spread.halves_agree() > 0.9


def test_noise_alone_shows_no_process_of_its_own() -> None:
    spread = ProcessSpread.of(rounds([1.0] * 6, noise=0.02, seed=1, count=40))
    assert spread.between() < spread.within() / 2
    assert abs(spread.halves_agree()) < 0.8


def test_a_process_that_slows_down_halfway_drifts() -> None:
    steps = rounds([1.0] * 4, noise=0.002, seed=2)
    for row in steps[6:]:
        row[1] *= 1.06
    assert ProcessSpread.of(steps).drift()[1] == pytest.approx(0.06, abs=0.015)
