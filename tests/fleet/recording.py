"""A calibration run as files: what the fleet did, the profile, the canary's readings, and the
workflow and trace a user would hand the simulator. The live calibration writes them and
simulates from them; runs kept under `tests/fleet/recorded/` are simulated again by the
suite, so a change to the model is checked against fleets that really ran, in seconds.
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from swiftdiffusion.operator import model as m
from swiftdiffusion.operator import render
from swiftdiffusion.planner import fleet as planner_fleet
from swiftdiffusion.planner import trace, workflows
from swiftdiffusion.planner.profile import Profile
from swiftdiffusion.planner.simulate import Result, Simulation
from tests.fleet.calibration import SEGMENTS, Comparison, FleetRun, compare
from tests.fleet.canary import Readings
from tests.testbed import components
from tests.testbed.fleet import prometheus

SEEDS = 16  # simulations of the trace, each with its own round-robin starts and scrape phase
RECORDED = sorted((Path(__file__).parent / "recorded").iterdir())  # the kept runs' folders, by name


def save(folder: Path, run: FleetRun, prof: Profile, readings: Readings, baseline: float,
         step_baseline: float) -> None:
    """The run's own files beside the workflow and trace the simulator reads (`workflow.yaml`,
    `trace.csv`, written first). `step_baseline`, the canary's reading at the profile's plain
    steps (`Readings.reading_at`; the baseline of runs 61-66), is kept to compare."""
    (folder / "profile.json").write_text(prof.model_dump_json(indent=2))
    (folder / "fleet.json").write_text(json.dumps(dataclasses.asdict(run), indent=2))
    (folder / "canary.json").write_text(json.dumps({"baseline": baseline, "step_baseline": step_baseline,
                                                    "readings": list(zip(readings.moments, readings.seconds,
                                                                         strict=True))}))


def simulate_seeds(plan: planner_fleet.Fleet, wfs: Sequence[m.Workflow], prof: Profile,
                   requests: Sequence[trace.Request], *, first_sync: float | None,
                   slowdown: Callable[[float], float] | None) -> list[Result]:
    """Over the phases no plan knows: each seed's round-robin starts, and scrapes spread over
    the interval; each replica its own device."""
    return [Simulation(plan, wfs, prof, first_sync=first_sync, slowdown=slowdown, seed=seed,
                       scrape_phase=(plan.scrape_interval or 0.0) * seed / SEEDS).run(requests)
            for seed in range(SEEDS)]


@dataclass(frozen=True)
class Recording:
    run: FleetRun
    profile: Profile
    workflows: list[m.Workflow]
    requests: list[trace.Request]
    readings: Readings
    baseline: float  # the canary's median while the profile was measured (runs 61-66: `step_baseline`)

    @classmethod
    def load(cls, folder: Path) -> Recording:
        wfs = workflows.load([folder / "workflow.yaml"])
        canary = json.loads((folder / "canary.json").read_text())
        return cls(FleetRun(**json.loads((folder / "fleet.json").read_text())),
                   Profile.model_validate_json((folder / "profile.json").read_text()), wfs,
                   trace.read(folder / "trace.csv", {wf.name: wf for wf in wfs}),
                   Readings([t for t, _ in canary["readings"]], [s for _, s in canary["readings"]]),
                   canary["baseline"])

    @cached_property
    def plan(self) -> planner_fleet.Fleet:
        """The operator's pools with the test bed's HPA sync period and scrape interval, not the defaults."""
        return dataclasses.replace(planner_fleet.build(self.workflows), sync_period=components.HPA_SYNC_SECONDS,
                                   scrape_interval=prometheus.SCRAPE_SECONDS)

    @cached_property
    def base_pool(self) -> str:
        return render.base_pool_name(self.workflows[0].name)

    @cached_property
    def first_sync(self) -> float | None:
        """The HPA's phase: the fleet's first scaling."""
        return self.run.first_sync(self.base_pool, self.plan.sync_period)

    def slowdown(self) -> Callable[[float], float]:
        """The canary's speed at each second of the trace against the profile's."""
        return self.readings.slowdown(self.baseline, self.run.started_at)

    def simulate(self, slowdown: Callable[[float], float] | None, *, profile: Profile | None = None,
                 plan: planner_fleet.Fleet | None = None) -> list[Result]:
        """`profile` and `plan`: a model other than the recorded profile and the operator's pools
        (the default), to see whether the run tells it apart."""
        return simulate_seeds(plan or self.plan, self.workflows, profile or self.profile, self.requests,
                              first_sync=self.first_sync, slowdown=slowdown)

    def compare(self, results: Sequence[Result]) -> Comparison:
        return compare(self.run, results, SEGMENTS[-1][1])
