"""The planner's calibration (issue 13): one trace replayed on the fleet and through the
simulator, with what each says about latency, replicas and the ControlNet cache.

The fleet side is open-loop, as users are: every request is sent at its arrival time on
its own connection to the base pool's Service, whatever is still in flight. Replicas are
read from the pools' Deployments (what the HPA set) and cache lookups from every ControlNet
pod's own /metrics, once a second, counted from the replay's start.
"""
from __future__ import annotations

import contextlib
import datetime
import os
import random
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from swiftdiffusion.operator import kube
from swiftdiffusion.operator import model as m
from swiftdiffusion.planner import report, service
from swiftdiffusion.planner.profile import Profile
from swiftdiffusion.planner.simulate import Result
from swiftdiffusion.planner.trace import Request
from swiftdiffusion.runtime import metric_names
from swiftdiffusion.runtime.client import generate, generate_request
from swiftdiffusion.runtime.dev.local_stack import Launcher
from tests.fleet.traffic import PNG, control_image, is_ready, pod_samples, ready_since, seconds_between
from tests.reconcile.fixtures import Cluster
from tests.testbed.fleet import cpu
from tests.testbed.waiting import eventually

# Cores per pod: 5 pods at most (3 base, 2 ControlNet) keep 1 of the 2 cores busy and leave the
# other to the test bed's daemons and the load client (docs/calibration.md: runs 6-10).
CPU_LIMIT = 0.2
# (start, end, load): quiet, a burst the minimum cannot serve, quiet again, twice; load in units
# of one replica's capacity on this machine (what the profile says it serves per second), so the
# burst overloads one replica on a fast machine and a slow one alike. The second burst doubles
# the requests and cache lookups a run compares (one burst's 21-36 lookups on a slow machine
# leave the hit rate to chance) and scales both pools out from a fleet that has just scaled in.
SEGMENTS = ((0.0, 30.0, 0.3), (30.0, 70.0, 1.3), (70.0, 140.0, 0.2), (140.0, 180.0, 1.3), (180.0, 240.0, 0.2))
CONTROLNET_CHOICES = ((), ("canny",), ("depth",), ("canny", "depth"))


def busy_cores(seconds: float = 10.0) -> float:
    """Cores this machine keeps busy over `seconds` (/proc/stat): the test bed's own load, which
    the pods do not get."""
    def sample() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return sum(fields) - idle, sum(fields)

    busy0, total0 = sample()
    time.sleep(seconds)
    busy1, total1 = sample()
    return (busy1 - busy0) / (total1 - total0) * len(os.sched_getaffinity(0))


@contextlib.contextmanager
def limited_services() -> Iterator[Launcher]:
    """Starts each service of a local stack (base, ControlNet) in a cgroup of its own with the
    pods' CPU limit, as the pods run."""
    groups = {role: cpu.create(f"profile-{role}-{uuid.uuid4().hex[:8]}", CPU_LIMIT)
              for role in ("base", "controlnet")}
    try:
        yield lambda role, argv: cpu.joining(groups[role], argv)
    finally:
        for procs in groups.values():
            cpu.remove(procs)


def trace(workflow: str, capacity: float, seed: int = 0, steps: int = 8, size: int = 64,
          segments: Sequence[tuple[float, float, float]] = SEGMENTS) -> list[Request]:
    """Poisson arrivals per segment at `capacity` requests per second times the segment's
    load; each request uses none, one or both ControlNets."""
    rng = random.Random(seed)
    requests = []
    for start, end, load in segments:
        t = start + rng.expovariate(load * capacity)
        while t < end:
            requests.append(Request(t, workflow, rng.choice(CONTROLNET_CHOICES), (), steps, size, size))
            t += rng.expovariate(load * capacity)
    return requests


def capacity(prof: Profile, workflow: m.Workflow, steps: int = 8, size: int = 64) -> float:
    """Requests per second one replica serves of the trace's mix, by the profile."""
    mix = [service.request_work(workflow, r) for r in trace(workflow.name, 1.0, steps=steps, size=size)]
    return len(mix) / sum(service.decoupled(prof, work).seconds for work in mix)


@dataclass
class FleetRun:
    """What the fleet did with a trace."""

    latencies: list[tuple[float, float]] = field(default_factory=list)  # (arrival, latency) seconds
    phases: list[dict[str, float]] = field(default_factory=list)  # each reply's server-side phase timings
    failures: list[str] = field(default_factory=list)
    replicas: dict[str, list[tuple[float, int]]] = field(default_factory=dict)  # pool -> (seconds, spec.replicas)
    lookups: dict[str, tuple[float, float]] = field(default_factory=dict)  # ControlNet pod -> (hits, misses)
    loads: dict[str, tuple[float, float]] = field(default_factory=dict)  # ControlNet pod -> (loads, their seconds)
    pod_starts: dict[str, float] = field(default_factory=dict)  # pod -> created to Ready, seconds
    scale_times: dict[str, list[float]] = field(default_factory=dict)  # pool -> its HPA's scalings, seconds
    started_at: float = 0.0  # wall clock at second 0 of the trace

    def first_sync(self, pool: str, period: float) -> float | None:
        """The pool's HPA's first sync after the replay started: it scales only at syncs, one
        period apart, and the phase of those is the controller's, not known in advance."""
        times = [t for t in self.scale_times.get(pool, []) if t >= 0]
        return min(times) % period if times else None

    def cache_hit_rate(self) -> float:
        hits = sum(h for h, _ in self.lookups.values())
        total = hits + sum(m for _, m in self.lookups.values())
        return hits / total if total else 0.0

    def controlnet_loads(self) -> tuple[float, float]:
        """(ControlNet loads, their seconds) over every ControlNet pod."""
        return sum(n for n, _ in self.loads.values()), sum(s for _, s in self.loads.values())


def pod_start(pod: dict[str, Any]) -> float:
    """Created -> Ready, seconds."""
    return seconds_between(pod["metadata"]["creationTimestamp"], ready_since(pod))


PROBE_LABEL = "swiftdiffusion.io/calibration-probe"  # the scale-out's pods, outside every pool


def scale_out_pod_starts(cluster: Cluster, pools: Sequence[str], timeout: float = 180) -> list[float]:
    """Created -> Ready of one pod of each pool's template, created together as a scale-out
    creates them, outside the pools (no Service or ReplicaSet selects them), then deleted.

    This is the pod start a burst's new replicas see. On this VM a pod that starts a minute
    or more after the last process freed its memory takes 20-40% longer than one that starts
    right after (its pages come back from the host one fault at a time: docs/calibration.md,
    session 21); the workflow's first pods start right after the profile's services stop,
    a burst's pods a minute or more after anything.
    """
    path = f"/api/v1/namespaces/{cluster.namespace}/pods"
    for pool in pools:
        template = (cluster.get("apps/v1", "Deployment", pool) or {})["spec"]["template"]
        kube.request(cluster.api, "POST", path, body={
            "apiVersion": "v1", "kind": "Pod", "spec": template["spec"],
            "metadata": {"name": f"{pool}-scale-out-probe", "labels": {PROBE_LABEL: pool}}})

    def ready() -> list[dict[str, Any]] | None:
        pods = cluster.list("v1", "pods", PROBE_LABEL)
        return pods if len(pods) == len(pools) and all(is_ready(pod) for pod in pods) else None

    try:
        return [pod_start(pod) for pod in eventually(ready, timeout=timeout, interval=0.5)]
    finally:
        for pod in cluster.list("v1", "pods", PROBE_LABEL):
            kube.request(cluster.api, "DELETE", f"{path}/{pod['metadata']['name']}", body={"gracePeriodSeconds": 0})
        eventually(lambda: not cluster.list("v1", "pods", PROBE_LABEL), timeout=60)


PodCounters = tuple[tuple[float, float], tuple[float, float]]  # (hits, misses), (loads, their seconds)
Counters = dict[str, PodCounters]  # by pod name


def controlnet_counters(pod_ip: str) -> PodCounters:
    """A ControlNet pod's (cache hits, misses) and (ControlNet loads, their seconds)."""
    values = {s.name: s.value for s in pod_samples(pod_ip, timeout=2)
              if s.labels.get("kind", "controlnet") == "controlnet"}
    return ((values.get(metric_names.CONTROLNET_CACHE_HITS_TOTAL, 0.0),
             values.get(metric_names.CONTROLNET_CACHE_MISSES_TOTAL, 0.0)),
            (values.get(f"{metric_names.MODEL_LOAD_SECONDS}_count", 0.0),
             values.get(f"{metric_names.MODEL_LOAD_SECONDS}_sum", 0.0)))


def controlnet_pods_counters(pods: Sequence[dict[str, Any]]) -> Counters:
    """The counters of every ControlNet pod that answers (one starting or gone does not)."""
    out = {}
    for pod in pods:
        if ip := pod.get("status", {}).get("podIP"):
            try:
                out[pod["metadata"]["name"]] = controlnet_counters(ip)
            except OSError:
                pass
    return out


def counted_since(now: Counters, before: Counters) -> Counters:
    """What each pod counted after `before`: a pod that served an earlier replay (the one a
    scale-in keeps) has its earlier lookups in its counters."""
    def minus(pair: tuple[float, float], earlier: tuple[float, float]) -> tuple[float, float]:
        return pair[0] - earlier[0], pair[1] - earlier[1]

    zero = ((0.0, 0.0), (0.0, 0.0))
    return {pod: (minus(lookups, before.get(pod, zero)[0]), minus(loads, before.get(pod, zero)[1]))
            for pod, (lookups, loads) in now.items()}


def _sample(cluster: Cluster, pools: Sequence[str], controlnet_pool: str, run: FleetRun, elapsed: float,
            started_at: float, before: Counters) -> None:
    hpas = {h["metadata"]["name"]: h for h in cluster.list("autoscaling/v2", "horizontalpodautoscalers")}
    pods: dict[str, list[dict[str, Any]]] = {}
    for pool in pools:
        hpa = hpas.get(f"keda-hpa-{pool}", {})  # KEDA's name for a ScaledObject's HPA
        if scaled := hpa.get("status", {}).get("lastScaleTime"):
            moment = datetime.datetime.fromisoformat(scaled).timestamp() - started_at
            if moment not in run.scale_times.setdefault(pool, []):
                run.scale_times[pool].append(moment)
        deployment = cluster.get("apps/v1", "Deployment", pool) or {}
        run.replicas.setdefault(pool, []).append((elapsed, deployment.get("spec", {}).get("replicas", 0)))
        pods[pool] = cluster.pods(pool)
        for pod in pods[pool]:
            if is_ready(pod) and pod["metadata"]["name"] not in run.pod_starts:
                run.pod_starts[pod["metadata"]["name"]] = pod_start(pod)
    for pod, (lookups, loads) in counted_since(controlnet_pods_counters(pods[controlnet_pool]), before).items():
        run.lookups[pod], run.loads[pod] = lookups, loads  # a pod starting or gone keeps its last


def replay(target: str, requests: Sequence[Request], cluster: Cluster, pools: Sequence[str],
           controlnet_pool: str) -> FleetRun:
    """Sends every request at its arrival time and samples the pools until all are answered."""
    run = FleetRun()
    images = {name: control_image() for name in {cn for r in requests for cn in r.controlnets}}
    lock = threading.Lock()
    before = controlnet_pods_counters(cluster.pods(controlnet_pool))
    started, started_at = time.monotonic(), time.time()
    run.started_at = started_at

    def send(index: int, request: Request) -> None:
        body = generate_request("a red cube", seed=index, steps=request.steps, width=request.width,
                                height=request.height, guidance_scale=5.0,
                                controlnets=[(name, images[name], None) for name in request.controlnets])
        try:
            reply = generate(target, body, timeout=300)
            assert reply.png.startswith(PNG)
            with lock:
                run.latencies.append((request.arrival, time.monotonic() - started - request.arrival))
                run.phases.append({"arrival": request.arrival, **reply.timings})
        except (grpc.RpcError, AssertionError) as error:
            with lock:
                run.failures.append(f"at {request.arrival:.1f} s: {type(error).__name__}: {error}")

    done = threading.Event()

    def sampler() -> None:
        while not done.is_set():
            _sample(cluster, pools, controlnet_pool, run, time.monotonic() - started, started_at, before)
            done.wait(1.0)

    watcher = threading.Thread(target=sampler, daemon=True)
    watcher.start()
    with ThreadPoolExecutor(max_workers=128) as pool:
        for index, request in enumerate(requests):
            time.sleep(max(0.0, started + request.arrival - time.monotonic()))
            pool.submit(send, index, request)
    done.set()
    watcher.join()
    _sample(cluster, pools, controlnet_pool, run, time.monotonic() - started, started_at, before)
    return run


def mean_of(slowdown: Callable[[float], float], start: float, end: float) -> float:
    """A slowdown's mean over a span of the trace, a second apart."""
    moments = range(int(start), int(end))
    return sum(slowdown(t) for t in moments) / len(moments)


def replicas_at(timeline: Sequence[tuple[float, int]], t: float) -> int:
    """The last value at or before `t` (the first one before the first sample)."""
    value = timeline[0][1]
    for seconds, count in timeline:
        if seconds > t:
            break
        value = count
    return value


def nearest_replicas(timeline: Sequence[tuple[float, int]], t: float, wanted: int, slack: float = 3.0) -> int:
    """The fleet's replicas around `t` closest to `wanted`: samples are a second apart and the
    Deployment follows the HPA's write within a second or two, so a mark that falls on a
    scaling may see either side of it."""
    around = {replicas_at(timeline, t + d) for d in (-slack, 0.0, slack)}
    return min(around, key=lambda n: abs(n - wanted))


@dataclass(frozen=True)
class Comparison:
    real_p50: float
    real_p95: float
    sim_p50: float
    sim_p95: float
    real_hits: float
    sim_hits: float
    replicas: dict[str, list[tuple[int, int, int]]]  # pool -> (minute mark s, fleet, simulator)

    def lines(self, real: str = "fleet", sim: str = "simulated") -> list[str]:
        out = [f"p50 {self.real_p50:.2f} s {real}, {self.sim_p50:.2f} s {sim} ({self.sim_p50 / self.real_p50 - 1:+.0%})",
               f"p95 {self.real_p95:.2f} s {real}, {self.sim_p95:.2f} s {sim} ({self.sim_p95 / self.real_p95 - 1:+.0%})",
               f"ControlNet cache hits {self.real_hits:.1%} {real}, {self.sim_hits:.1%} {sim}"]
        return out + self._replica_lines(real, sim, 0)

    def _replica_lines(self, real: str, sim: str, beyond: int) -> list[str]:
        return [f"{pool} replicas at {t} s: {real} {count}, {sim} {predicted}"
                for pool, marks in self.replicas.items() for t, count, predicted in marks
                if abs(count - predicted) >= beyond]

    def misses(self, replicas: int = 1, hits: float = 0.05, latency: float = 0.2, real: str = "fleet",
               sim: str = "simulated") -> list[str]:
        """Every bound of issue 13 the simulation misses: replicas at each mark, hit rate
        points, latency relative (all named, so one run shows each way it is off)."""
        out = self._replica_lines(real, sim, replicas + 1)
        if abs(self.sim_hits - self.real_hits) > hits:
            out.append(f"cache hits {100 * (self.sim_hits - self.real_hits):+.1f} points")
        out += [f"{name} {expected / actual - 1:+.1%}" for name, actual, expected in (
            ("p50", self.real_p50, self.sim_p50), ("p95", self.real_p95, self.sim_p95))
            if abs(expected / actual - 1) > latency]
        return out


def compare(run: FleetRun, results: Sequence[Result], duration: float, step: int = 30) -> Comparison:
    """The fleet against what the simulator expects over `results`, one per seed: where a
    Service's round-robin and each gRPC picker start is no plan's to know, and the cache's
    hits turn on it (a few lookups either way are several points in a short trace). Latency
    percentiles are of every seed's requests together, the hit rate is the seeds' mean and
    each minute mark's replicas their median."""
    real = sorted(latency for _, latency in run.latencies)
    simulated = sorted(o.latency for result in results for o in result.outcomes)
    hits = statistics.mean(sum(r.cache_hits.values()) / max(1, sum(r.cache_lookups.values())) for r in results)
    marks = range(step, int(duration) + 1, step)
    replicas = {}
    for pool in run.replicas:
        predicted = [(t, statistics.median_low(replicas_at(r.pools[pool].timeline, t) for r in results)) for t in marks]
        replicas[pool] = [(t, nearest_replicas(run.replicas[pool], t, sim), sim) for t, sim in predicted]
    return Comparison(report.percentile(real, 50), report.percentile(real, 95), report.percentile(simulated, 50),
                      report.percentile(simulated, 95), run.cache_hit_rate(), hits, replicas)


def compare_runs(first: FleetRun, second: FleetRun, duration: float, step: int = 30) -> Comparison:
    """A second replay of the trace against the first, in the simulator's place: how far the
    fleet lands from itself, the floor under what a model of it can reach on this machine."""
    real, again = (sorted(latency for _, latency in run.latencies) for run in (first, second))
    marks = range(step, int(duration) + 1, step)
    replicas = {pool: [(t, nearest_replicas(first.replicas[pool], t, count), count)
                       for t in marks for count in [replicas_at(second.replicas[pool], t)]]
                for pool in first.replicas}
    return Comparison(report.percentile(real, 50), report.percentile(real, 95), report.percentile(again, 50),
                      report.percentile(again, 95), first.cache_hit_rate(), second.cache_hit_rate(), replicas)
