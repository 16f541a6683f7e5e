"""The simulator against fleets that ran: calibration runs kept with their files
(`recording.py`), simulated again at the canary's speed, each within every bound of issue 13
but those `KNOWN_MISSES` names for it (fifteen runs). A change to the model (the scaling rule, the
cache, the balancing, the service times) that moves one of them out is seen here in
seconds, where the live calibration (`make calibrate`) takes minutes and the fleet.

Runs 51-57 and 59 of docs/calibration.md: all of that series' runs but 50 and 58,
which missed p50 and p95 when they ran (their profiles' step off against the VM's speed);
a model right for them would be wrong for the others. Runs 64-67, 69 and 71: those of runs
61-72 with nine profile rounds that held against the canary's median over the profile
(their `baseline`; runs 64-66 ran against `step_baseline`, also kept); runs 68, 70 and 72
missed. Runs 80 and 82: the `make calibrate` runs after the callers' resolution joined the
model (and the replays' counters were counted from their start); both held. From run 83 (the
profile's services answering the pods' scrapes and probes) every `make calibrate` run is
kept, held or missed, and both replays of a `make calibrate-repeat` (run 87: `a` and `b`), so
the runs here are not chosen by the model of their day.
"""
from __future__ import annotations

import functools
from pathlib import Path

import pytest

from tests.fleet.models import WRONG_MODELS
from tests.fleet.recording import RECORDED, Recording

# The bounds a run missed when it ran or has missed since a change to the model, with the reason
# in docs/calibration.md, not dropped: the run fails here if it misses anything else,
# or comes back within one of them.
KNOWN_MISSES: dict[str, tuple[str, ...]] = {
    # the callers' resolution at each connection age: the fleet's hit rate is 2.5 of the
    # simulation seeds' standard deviations below their mean; 2.5 points above it before
    "run-52": ("cache hits +",),
    # "What a pod answers beside its requests": a profile whose step read fast against the canary
    "run-83": ("p50 -",),
    "run-85": ("p95 -",),
    # ... and a p50 between the quiet requests and the queued ones, which the simulation's
    # seeds put anywhere from 2.1 to 6.3 s (the fleet: 6.0 s)
    "run-86": ("p50 -",),
    # the second replay of `make calibrate-repeat`: the fleet's own hit rate moved 7.1 points
    # from the first replay (36.5%, which the simulation met within 1.8) to this one
    "run-87b": ("cache hits -",),
    # "What a calibration can tell": the first burst's requests 12-55% slower than simulated
    # before any queue, its plain steps on the canary's pace (x1.015); replicas equal at every mark
    "run-89": ("p50 -",),
    # "Where the pace spread comes from": its plain steps 7% slower than the profile's at the
    # canary's speed (x1.071); simulated at its own pace it holds (p95 -11%)
    "run-91": ("p95 -",),
    # p50 low with the pace right or fast (x1.051 and x0.922): at their own pace they still miss
    # it (-27% and -34%); run 92 also p95, which its own pace brings to -14%
    "run-92": ("p50 -", "p95 -"),
    "run-93": ("p50 -",),
    # "Where the lean at p50 comes from": the first burst's pods started cold (29 s against the
    # first pods' 24 s; with their start the simulation holds, p50 -0%)
    "run-94": ("p50 -",),
    # "Where the lean at p50 comes from": the fleet's base pool scaled in at 116.5 s, the
    # simulation's one HPA sync later (120.5 s in most seeds), across the 120 s mark; p50 +3%
    "run-96": ("swd-calibration-base replicas at 120 s",),
    # ... and the second burst's pods started warm (25, 25, 23 s against the scale-out's 29 s):
    # the fleet scaled in before the 240 s mark, the simulation after it; p50 +18%
    "run-98": ("swd-calibration-base replicas at 240 s",),
    # the scale-out started warm (21 s) and the first burst's pods cold (25, 27, 23 s); p50 -36%
    "run-99": ("p50 -",),
    # with the fleet's kubelet touching 1 GiB before each container start (tried, not kept): the
    # scale-out started warm (22.5 and 21 s), the bursts' pods 2-5 s slower under the bursts' load
    "run-100": ("p50 -",),
    "run-101": ("p50 -",),
}


@functools.cache
def recording(folder: Path) -> Recording:
    return Recording.load(folder)


def unexpected(folder: Path, misses: list[str]) -> list[str]:
    """The bounds a run misses beyond those it is known to miss."""
    return [m for m in misses if not m.startswith(KNOWN_MISSES.get(folder.name, ()))]


@pytest.mark.parametrize("folder", RECORDED, ids=lambda p: p.name)
def test_a_recorded_fleet_run_is_simulated_within_every_bound(folder: Path) -> None:
    recorded = recording(folder)
    outcome = recorded.compare(recorded.simulate(recorded.slowdown()))
    assert max(real for _, real, _ in outcome.replicas[recorded.base_pool]) > 1, "the burst scaled the base pool"
    misses = outcome.misses()
    assert unexpected(folder, misses) == [], "\n".join(outcome.lines())
    back = [bound for bound in KNOWN_MISSES.get(folder.name, ()) if not any(m.startswith(bound) for m in misses)]
    assert back == [], f"{folder.name} is back within {back}"


@pytest.mark.parametrize("wrong", WRONG_MODELS)
def test_the_recorded_runs_refuse_a_model_wrong_in_one_part(wrong: str) -> None:
    """The check above can fail: a third of the runs at least miss a bound they hold under ours."""
    model = WRONG_MODELS[wrong]
    refused = [folder.name for folder in RECORDED for recorded in [recording(folder)]
               if unexpected(folder, recorded.compare(model.simulate(recorded)).misses())]
    assert 3 * len(refused) >= len(RECORDED), f"{wrong}: only {refused} refuse it"
