"""How often one live calibration run tells a model right from wrong:
`python -m tests.fleet.power [--fleets N] [--traces N]`.

A live run is one draw of the fleet, and the bounds hold or not for that draw. Draws are made
here from the simulator, with what makes one run on this machine differ from another, as
the recorded runs measured it: each request's service time off by a draw from the spread of
their plain requests' steps around their run's median, the whole run's pace off by a draw from
the spread of those medians from run to run (what the canary and the profile together do not
foresee), and the HPA's and Prometheus's phases at random. Each draw is held against the
test's own prediction (its sixteen seeds) by a model: ours, or one wrong in one part
(`models.py`). A right model's share of held draws is the most a live run can show on this
machine; a wrong one's is how often one run lets it pass (docs/calibration.md, "What a
calibration can tell").
"""
from __future__ import annotations

import argparse
import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from swiftdiffusion.planner.simulate import Result, Simulation
from swiftdiffusion.planner.trace import Request
from tests.fleet import calibration
from tests.fleet.models import OURS, WRONG_MODELS, Model
from tests.fleet.recording import RECORDED, Recording, simulate_seeds

# The calibration's own trace, and bursts as many requests strong but shorter and sharper:
# a queue three times the service rate amplifies a speed error less (rho / (rho - 1): 1.5
# against 4.3), but ends before a new replica serves, so the pod start counts for less.
DESIGNS = {"calibration": calibration.SEGMENTS,
           "short bursts": ((0.0, 30.0, 0.3), (30.0, 47.0, 3.0), (47.0, 140.0, 0.2), (140.0, 157.0, 3.0),
                            (157.0, 240.0, 0.2))}


@dataclass(frozen=True)
class Spread:
    """How far a fleet run's service strays from the model's, measured on recorded runs."""

    requests: list[float]  # a request's step over its run's median
    runs: list[float]  # a run's median step over the median run's

    @classmethod
    def measured(cls, recordings: Sequence[Recording]) -> Spread:
        """From plain requests' steps against the profile's at the canary's speed (queued ones
        against the queued step)."""
        requests, paces = [], []
        for recorded in recordings:
            slowdown, prof = recorded.slowdown(), recorded.profile
            ratios = []
            for (arrival, _), phases in zip(recorded.run.latencies, recorded.run.phases, strict=True):
                request = min(recorded.requests, key=lambda r: abs(r.arrival - arrival))
                if not request.controlnets:
                    queued = prof.queued_slowdown if phases["queue"] > 0.01 else 1.0
                    expected = prof.base_step_seconds * slowdown(arrival) * queued
                    ratios.append(phases["denoise"] / request.steps / expected)
            pace = statistics.median(ratios)
            requests += [r / pace for r in ratios]
            paces.append(pace)
        middle = statistics.median(paces)
        return cls(requests, [p / middle for p in paces])


def fleet_draw(recorded: Recording, requests: list[Request], spread: Spread,
               draw: int) -> tuple[calibration.FleetRun, float]:
    """One run of a fleet that serves as our model says, but for the spread; and its first HPA sync."""
    rng = random.Random(draw)
    pace, first_sync = rng.choice(spread.runs), rng.uniform(0.0, recorded.plan.sync_period)
    result = Simulation(recorded.plan, recorded.workflows, recorded.profile, first_sync=first_sync,
                        slowdown=lambda _: pace * rng.choice(spread.requests), seed=draw,
                        scrape_phase=rng.uniform(0.0, recorded.plan.scrape_interval or 0.0)).run(requests)
    return as_fleet_run(result), first_sync


def as_fleet_run(result: Result) -> calibration.FleetRun:
    return calibration.FleetRun(
        latencies=[(o.arrival, o.latency) for o in result.outcomes or []],
        replicas={name: list(pool.timeline) for name, pool in result.pools.items()},
        lookups={name: (float(hits), float(result.cache_lookups[name] - hits))
                 for name, hits in result.cache_hits.items()})


def held(recorded: Recording, segments: Sequence[tuple[float, float, float]], models: dict[str, Model],
         spread: Spread, fleets: int, traces: int) -> dict[str, int]:
    """Of `fleets` draws on each of `traces` traces of `segments`, how many each model holds."""
    counts = dict.fromkeys(models, 0)
    workflow = recorded.workflows[0]
    for seed in range(traces):
        requests = calibration.trace(workflow.name, calibration.capacity(recorded.profile, workflow), seed=seed,
                                     segments=segments)
        for draw in range(fleets):
            run, first_sync = fleet_draw(recorded, requests, spread, draw)
            for name, model in models.items():
                predicted = simulate_seeds(model.plan_of(recorded.plan), recorded.workflows,
                                           model.profile_of(recorded.profile), requests, first_sync=first_sync,
                                           slowdown=model.slowdown(None))
                counts[name] += not calibration.compare(run, predicted, segments[-1][1]).misses()
    return counts


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fleets", type=int, default=40, help="fleet draws per trace")
    parser.add_argument("--traces", type=int, default=3, help="traces per design (seeds 0, 1, ...)")
    parser.add_argument("--run", type=Path, default=None, help="the recorded run whose profile and workflow to use "
                                                                "(default: the latest)")
    args = parser.parse_args(argv)
    recordings = [Recording.load(folder) for folder in RECORDED]
    spread = Spread.measured(recordings)
    recorded = Recording.load(args.run) if args.run else recordings[-1]
    print(f"a request's step around its run's: quartiles {statistics.quantiles(spread.requests, n=4)}; "
          f"a run's pace: standard deviation {statistics.pstdev(spread.runs):.3f} over {len(spread.runs)} runs")
    models = {"ours": OURS, **WRONG_MODELS}
    total = args.fleets * args.traces
    counts = {design: held(recorded, segments, models, spread, args.fleets, args.traces)
              for design, segments in DESIGNS.items()}
    print(f"draws within every bound, of {total} per trace design:")
    print("| model | " + " | ".join(DESIGNS) + " |\n|---|" + "---|" * len(DESIGNS))
    for name in models:
        print(f"| {name} | " + " | ".join(f"{counts[design][name] / total:.0%}" for design in DESIGNS) + " |")


if __name__ == "__main__":
    main()
