"""The planner against the fleet (issue 13): the same trace, with a burst, replayed on real
runtime pods autoscaled by KEDA and the HPA, and through the simulator, with a profile that
`swiftdiffusion profile` measures on this machine just before (its pod start taken from a
scale-out on the fleet, as a user reads it off their cluster).

Every pod has a CPU limit, which the fleet's kubelet enforces with a CFS quota as the kubelet
does, and the profile's services run under the same limit: each replica then has a device of
its own speed, as on a GPU fleet, and the limits of the most pods the workflow scales to
fit in the cores the test bed leaves free (unlimited, the pods of this 2-core machine slow
each other down by more than processor sharing models).

This VM's speed drifts by up to 25% from one minute to the next, so a speed canary
(`canary.py`) runs at the pods' limit throughout, and the simulator replays a second time at
the speed it measured against the profile's minutes; both results are printed. What no plan
can know is averaged over: each side is 16 simulations, with their own round-robin starts
and scrape phases; the HPA's phase is taken from the fleet's first scaling.

Checked (`make calibrate`; not part of `make test`, whose warm run it would take past 10
minutes): the replica timelines within one replica at every half minute, the ControlNet
cache hit rate within 5 points of the simulations' mean, and p50 and p95 latency within 20%
at the canary's speed. With two bursts (runs 40-49, docs/calibration.md) all of it
held in nine of ten runs; the other was off on latency and the cache, with a profile whose
`queued_slowdown` read 1.31 where the fleet's own queued pace was 1.09. With the profile's
queue measured right after its requests alone (runs 50-60) eight of eleven held; two others
had profiles whose step was off against the canary, which the bursts' queues made +-33% at p50,
and one missed p95 by half a point. With nine profile rounds (runs 64-72) and the canary's
speed read at the profile's own steps beside its median over the profile (runs 61-72), nine
of twelve held against the median and six against the reading at the steps, which is
printed to compare; the three misses (p50 -23%; -33% and p95 -32%; p95 -28%) had pods that
started slowly under the second burst or a queue the profile read low. Replayed twice six
minutes apart (`make calibrate-repeat`, runs 73-78), the fleet missed the bounds against its
own first replay in all six pairs (p50 -42% to +42%, mostly the VM's speed), the simulator
at the canary's speed in four of the twelve replays. With the profile's services answering
the pods' scrapes and probes (runs 83-86 and 88), two of five held; the three misses
leaned low, as most misses since run 50 have. That lean was the pod start: the first
burst's pods start a minute after anything freed memory, which on this VM makes them 3-6 s
slower than the workflow's first pods, so from run 95 the pod start comes from a scale-out
before the replay (docs/calibration.md, session 21).
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import json
import os
import shutil
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from swiftdiffusion.operator import render
from swiftdiffusion.operator.local_process import LocalOperator
from swiftdiffusion.planner import profile, trace, workflows
from swiftdiffusion.runtime.dev import service_profile
from tests.fleet import calibration, canary, recording
from tests.fleet.traffic import ready_pods, service_target
from tests.reconcile.fixtures import Cluster
from tests.testbed.cluster import TestBed
from tests.testbed.fleet import model_store, prometheus
from tests.testbed.waiting import eventually

pytestmark = [pytest.mark.slow, pytest.mark.calibration]

STEPS, SIZE = 8, 64
# The profile's rounds: from run 64, nine (five before), each about 40 s. The calibration's error
# sits in the profile's step and queue against the VM's speed (docs/calibration.md).
REPEATS = 9


def calibration_workflow(controlnet_bytes: int) -> dict[str, Any]:
    """The canny+depth example, float32 as the profile measures it, both pools autoscaled, and a
    ControlNet cache that holds one of its two ControlNets (so the trace's mix misses)."""
    workflow = copy.deepcopy(next(w for w in model_store.example_workflows()
                                  if w["metadata"]["name"] == "sdxl-canny-depth"))
    workflow["metadata"] = {"name": "calibration"}
    spec = workflow["spec"]
    spec["base"]["dtype"] = "float32"
    spec["basePool"]["autoscaling"] = {"enabled": True, "minReplicas": 1, "maxReplicas": 3,
                                       "targetInFlightPerReplica": 2, "scaleDownStabilizationSeconds": 30}
    spec["controlnetPool"]["autoscaling"] = {"enabled": True, "minReplicas": 1, "maxReplicas": 2,
                                             "targetInFlightPerReplica": 2, "scaleDownStabilizationSeconds": 30}
    spec["controlnetPool"]["cacheBytes"] = controlnet_bytes * 3 // 2
    for pool in ("basePool", "controlnetPool"):
        spec[pool]["resources"] = {"limits": {"cpu": f"{round(calibration.CPU_LIMIT * 1000)}m"}}
    return workflow


def write_workflow(folder: Path, body: dict[str, Any]) -> Path:
    (folder / "workflow.yaml").write_text(yaml.safe_dump(body))
    return folder / "workflow.yaml"


@dataclasses.dataclass
class Prepared:
    """What a calibration replays on: the profile measured with the canary beside it, the
    workflow applied and Ready, and the trace at its capacity."""

    speed: canary.Readings
    measured: service_profile.Measurement
    baseline: float | None  # the canary's median while the profile was measured
    profile: profile.Profile  # with the pod start of a scale-out on the fleet
    local_pod_start: float  # the profile's own, from two local processes
    first_pod_start: float  # the workflow's first pods', to compare
    pools: tuple[str, str]  # base, ControlNet
    requests: list[trace.Request]
    target: str

    def replay(self, cluster: Cluster) -> calibration.FleetRun:
        return calibration.replay(self.target, self.requests, cluster, self.pools, self.pools[1])

    @functools.cached_property
    def step_baseline(self) -> float | None:
        """The canary's reading at the profile's plain steps (the baseline of runs 61-66)."""
        return self.speed.reading_at(self.measured.base_steps())

    def record(self, folder: Path, run: calibration.FleetRun) -> recording.Recording:
        """The run as a user's files in `folder` (beside the workflow `prepared` wrote), read back."""
        step_baseline = self.step_baseline
        assert self.baseline is not None and step_baseline is not None, \
            "the canary read nothing while the profile was measured"
        if not (folder / "workflow.yaml").exists():
            shutil.copy(folder.parent / "workflow.yaml", folder)
        trace.write(folder / "trace.csv", self.requests)
        recording.save(folder, run, self.profile, self.speed, self.baseline, step_baseline)
        return recording.Recording.load(folder)


@contextlib.contextmanager
def prepared(fleet: TestBed, cluster: Cluster, model_set: Path, folder: Path) -> Iterator[Prepared]:
    """The profile, the workflow and the trace, with the canary running until the block ends."""
    with canary.canary(model_set, calibration.CPU_LIMIT) as speed:
        profiled_from = time.time()
        with calibration.limited_services() as launcher:
            # The services answer what the fleet's pods do: the test bed's scrapes, the rendered probes.
            measured = service_profile.measure(model_set, size=SIZE, steps=STEPS, repeats=REPEATS, launcher=launcher,
                                               traffic=service_profile.PodTraffic(prometheus.SCRAPE_SECONDS))
        baseline = speed.median(profiled_from, time.time())
        local = profile.Profile.model_validate(measured.profile())
        body = calibration_workflow(local.controlnet_bytes)
        name = body["metadata"]["name"]
        base, cn = render.base_pool_name(name), render.dedicated_controlnet_pool_name(name)
        cluster.apply_workflow(body)
        cluster.wait_ready(name, timeout=240)
        eventually(lambda: cluster.condition(name, "AutoscalingReady").get("reason") == "Active", timeout=90)
        # Pod start as a user reads it off their cluster before planning, from a scale-out: one pod
        # of each pool created together (the profile's two local processes do not see scheduling
        # and probes, and the workflow's first pods start as no burst's do: `scale_out_pod_starts`).
        first = statistics.mean(calibration.pod_start(p) for pool in (base, cn) for p in ready_pods(cluster, pool))
        scale_out = calibration.scale_out_pod_starts(cluster, (base, cn))
        prof = local.model_copy(update={"pod_start_seconds": statistics.mean(scale_out)})
        # The simulator reads what a user would give it: the workflow file and the trace file.
        wfs = workflows.load([write_workflow(folder, body)])
        capacity = calibration.capacity(prof, wfs[0], steps=STEPS, size=SIZE)
        yield Prepared(speed, measured, baseline, prof, local.pod_start_seconds, first, (base, cn),
                       calibration.trace(name, capacity, steps=STEPS, size=SIZE),
                       service_target(fleet, cluster.namespace, base))


def test_the_simulator_predicts_the_fleet_under_a_burst(
        fleet: TestBed, fleet_cluster: Cluster, scaling_operator: LocalOperator, tiny_model_set: Path,
        tmp_path: Path) -> None:
    with prepared(fleet, fleet_cluster, tiny_model_set, tmp_path) as ready:
        background = calibration.busy_cores()
        run = ready.replay(fleet_cluster)
    prof, measured, baseline = ready.profile, ready.measured, ready.baseline
    # The simulator reads the run back as a user's files; the first replay at the profile's
    # speed, the second at the speed the canary measured at each moment of the trace.
    recorded = ready.record(tmp_path, run)
    step_baseline = ready.step_baseline
    slowdown = recorded.slowdown()
    results = recorded.simulate(slowdown)
    outcome, unadjusted = recorded.compare(results), recorded.compare(recorded.simulate(None))
    at_steps = recorded.compare(recorded.simulate(ready.speed.slowdown(step_baseline, run.started_at)))
    (tmp_path / "measurement.json").write_text(json.dumps(  # the profile's samples and their moments, for study
        {name: [dataclasses.asdict(sample) for sample in probe.samples] for name, probe in measured.probes.items()}
        | {"backlogs": [dataclasses.asdict(queue) for queue in measured.backlogs]}))
    (tmp_path / "simulated.json").write_text(json.dumps([[(o.arrival, o.latency) for o in r.outcomes]
                                                         for r in results]))
    free = len(os.sched_getaffinity(0)) - background  # what the test bed itself leaves to the pods
    plan, first_sync = recorded.plan, recorded.first_sync
    loads, loaded = run.controlnet_loads()
    starts = ", ".join(f"{s:.0f}" for s in sorted(run.pod_starts.values()))
    most = calibration.CPU_LIMIT * sum(p.autoscaling.max_replicas for p in plan.pools.values())
    speeds = ", ".join(f"{start:.0f}-{end:.0f} s x{calibration.mean_of(slowdown, start, end):.2f}"
                       for start, end, _ in calibration.SEGMENTS)
    print("\n".join(["calibration:", f"cores the test bed leaves free: {free:.2f}, the pods' limits add up to "
                      f"{most:.2f} at most; first HPA sync at {first_sync} s",
                      f"the canary's slowdown against the profile's minutes: {speeds}",
                      "at the speed the canary measured:", *outcome.lines(),
                      f"the canary's median over the profile {baseline:.3f} s, its reading at the profile's "
                      f"plain steps {step_baseline:.3f} s; against the latter:", *at_steps.lines()[:3],
                      "at the profile's speed:", *unadjusted.lines()[:3],
                      f"pod starts (created -> Ready): fleet {starts} s, a scale-out before the replay "
                      f"{prof.pod_start_seconds:.1f} s (simulated), the first pods {ready.first_pod_start:.1f} s, "
                      f"local profile {ready.local_pod_start:.1f} s",
                      f"a ControlNet load (cache miss): fleet {loaded / max(1, loads):.3f} s on average over "
                      f"{loads:.0f}, profile {prof.controlnet_load_seconds:.3f} s",
                      *run.failures]))
    assert run.failures == []
    assert max(real for _, real, _ in outcome.replicas[ready.pools[0]]) > 1, "the burst scaled the base pool"
    assert outcome.misses() == []


@pytest.mark.timeout(1800)  # the profile, two replays and the drain between them: 14-16 minutes
def test_the_fleet_against_itself(fleet: TestBed, fleet_cluster: Cluster, scaling_operator: LocalOperator,
                                  tiny_model_set: Path, tmp_path: Path) -> None:
    """The trace replayed twice, the second time once both pools are back at their minimum:
    how far the fleet lands from itself on this machine, the floor under what any model of it
    can reach, beside how far the simulator lands from each replay (`make calibrate-repeat`)."""
    with prepared(fleet, fleet_cluster, tiny_model_set, tmp_path) as ready:
        runs = [ready.replay(fleet_cluster)]
        eventually(lambda: all(len(fleet_cluster.pods(pool)) == 1 and
                               fleet_cluster.get("apps/v1", "Deployment", pool)["spec"]["replicas"] == 1
                               for pool in ready.pools), timeout=300, interval=1)
        runs.append(ready.replay(fleet_cluster))
    lines, outcomes = [], []
    for label, run in zip(("first", "second"), runs, strict=True):
        (tmp_path / label).mkdir()
        recorded = ready.record(tmp_path / label, run)
        slowdown = recorded.slowdown()
        outcomes.append(outcome := recorded.compare(recorded.simulate(slowdown)))
        speeds = ", ".join(f"{calibration.mean_of(slowdown, start, end):.2f}" for start, end, _ in calibration.SEGMENTS)
        lines += [f"the {label} replay (the canary over its spans: {speeds}) against the simulator:",
                  *outcome.lines()[:3], f"  beyond a bound: {', '.join(outcome.misses()) or 'none'}"]
    against = calibration.compare_runs(*runs, calibration.SEGMENTS[-1][1])
    first, second = outcomes
    lines += ["the second replay against the first:", *against.lines("first", "second"),
              f"  beyond a bound: {', '.join(against.misses(real='first', sim='second')) or 'none'}",
              "from the first replay to the second, p50 and p95: the fleet "
              f"{second.real_p50 / first.real_p50 - 1:+.0%} and {second.real_p95 / first.real_p95 - 1:+.0%}, "
              f"the simulator {second.sim_p50 / first.sim_p50 - 1:+.0%} and {second.sim_p95 / first.sim_p95 - 1:+.0%}"]
    print("\n".join(["the fleet against itself:", *lines, *(f for run in runs for f in run.failures)]))
    assert [run.failures for run in runs] == [[], []]
    assert all(max(n for _, n in run.replicas[ready.pools[0]]) > 1 for run in runs), "each burst scaled the base pool"
