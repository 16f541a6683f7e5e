"""Discrete-event replay of a trace through a `Fleet`.

Base replicas serve one request at a time from their own queue, as the base server's worker
does: it takes the next request once the loop is done, and the reply's decode follows beside
it (the profile's `decode_seconds`, slowed by `queued_decode_slowdown` when a queued request
started then, which is itself slowed by `queued_slowdown`). Requests reach them
round-robin over the pool Service's ready endpoints, from a start drawn from the seed (where
a proxy's turn stands is no plan's to know). A base request's ControlNet session
goes to its ControlNet pool as gRPC's round_robin policy in the calling base replica's own
channel sends it: each caller takes in turn the replicas its channel knows, those ready when
it last resolved the pool's name, from a random start drawn whenever that list changes
(grpc-core builds a new picker then, with a random start, so that clients do not all begin
on the same endpoint). A channel resolves at its first call, when one of its connections
reaches the servers' connection age (`runtime.serving.connections`), and at once when a
replica it knows goes away: a new replica waits up to one age for each caller to find it.
A session's cache misses load on that ControlNet replica as work of its own beside its open
sessions' steps and other loads (processor sharing), so a replica many callers find at once
loads slowly; the loads do not slow the sessions already open, whose steps are timed as
they start.
Autoscaled pools are resized every HPA sync period as the HPA does for the operator's
ScaledObjects: desired = ceil(demand / target) within the bounds, unchanged within the HPA's 10% tolerance,
demand = the pool's in-flight calls (a ControlNet pool: max(own sessions, sum of its
callers' in-flight)) at the sync, or at the last Prometheus scrape with a scrape interval,
scale-up at most max(4 pods, 100%) per sync (the HPA's default policy), scale-down to
the highest desired count of the stabilization window. New replicas serve after the
profile's pod start; a removed replica takes no new request and leaves when its queue is
empty.

With `shared_cores` every replica runs on one host of that many cores (the CPU test bed;
GPUs time-sliced between pods): busy replicas and starting pods share them as a processor
-sharing queue, each running at min(1, cores / demand) of its own speed, where demand is
the summed CPU intensity of the work in progress.

Requests come from any iterable in arrival order and are taken one at a time: only the next
arrival waits outside the event heap, and with `keep_outcomes=False` each outcome goes into
its workflow's latency histogram (`latency.py`), so memory follows the requests in flight,
not the length of the trace.
"""
from __future__ import annotations

import heapq
import itertools
import math
import random
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from swiftdiffusion.operator import model as m
from swiftdiffusion.operator.render import BASE
from swiftdiffusion.planner import service
from swiftdiffusion.planner.latency import ExactLatencies, Latencies, LatencyHistogram
from swiftdiffusion.planner.cache import LruNames
from swiftdiffusion.planner.fleet import Fleet, PoolModel, desired_replicas
from swiftdiffusion.planner.host import SharedHost
from swiftdiffusion.planner.profile import Profile
from swiftdiffusion.planner.trace import Request
from swiftdiffusion.runtime.serving.connections import (
    CONNECTION_AGE_JITTER,
    CONNECTION_AGE_SECONDS,
    RESOLUTION_INTERVAL_SECONDS,
)

DONE, READY, POLL, SHARED, SCRAPE, RELEASE = range(6)
HPA_SCALE_UP_PODS = 4  # the HPA's default scale-up policy: max(4 pods, 100%) per period
HPA_TOLERANCE = 0.1  # the HPA leaves replicas alone while demand / (target x replicas) is within 10% of 1
SHAPES_CACHED = 4096  # request shapes (workflow, steps, size, ControlNets, LoRA bounds, misses) whose work is kept


class SimulationError(ValueError):
    """A trace the fleet cannot serve at all (a request for a pool with no replicas, arrivals out of order)."""


@dataclass(eq=False, slots=True)
class Replica:
    pool: str
    created: float
    ready_at: float
    cache: LruNames | None  # None once removed, as is its queue: only its lifetime is kept
    queue: deque[_Job] | None = field(default_factory=deque)
    busy: bool = False
    draining: bool = False
    removed: float | None = None
    load: float = 0.0  # a ControlNet replica: the summed share of its open sessions
    sessions: int = 0
    decoding: int = 0  # a base replica: requests past its worker, decoding their images
    known: tuple[Replica, ...] = ()  # a calling replica: the ControlNet replicas its channel last resolved
    resolves_at: float = 0.0  # when its channel resolves again (a connection reaches its age)
    endpoints_seen: int = -1  # the ControlNet pool's `endpoints` when it last looked for replicas gone
    endpoints_known: int = -1  # and the last version of which it knew every ready replica
    picked: int = 0  # its picker's last position over `known`
    loading_until: list[float] = field(default_factory=list)  # a ControlNet replica: when its loads in progress end

    @property
    def idle(self) -> bool:
        return not self.busy and not self.queue and not self.sessions and not self.decoding

    def remove(self, now: float) -> None:
        """Gone: it keeps only its lifetime (what GPU-hours and peak GPUs need), not its
        queue and cache, so replicas that come and go all day hold little memory."""
        self.removed, self.queue, self.cache = now, None, None


@dataclass(eq=False, slots=True)
class PoolState:
    model: PoolModel
    replicas: list[Replica] = field(default_factory=list)  # every replica it ever had
    live: list[Replica] = field(default_factory=list)  # not draining: the Deployment's replicas
    ready: list[Replica] = field(default_factory=list)  # live and serving: the Service's endpoints
    turn: int = 0
    endpoints: int = 0  # a version of `ready`, bumped whenever it changes
    in_flight: int = 0
    # (time, desired) of the scale-down window that may yet be its highest: decreasing, so the first is
    desired_window: deque[tuple[float, int]] = field(default_factory=deque)
    timeline: list[tuple[float, int]] = field(default_factory=list)
    callers: list[PoolState] = field(default_factory=list)  # a ControlNet pool's base pools
    cache_hits: int = 0
    cache_lookups: int = 0
    scraped_demand: int = 0  # the demand the HPA last read, with a scrape interval

    def next_replica(self, now: float) -> Replica:
        """Round-robin over ready replicas (any starting one if none is ready yet)."""
        choices = self._choices(now)
        self.turn += 1
        return choices[self.turn % len(choices)]

    def pick_for(self, caller: Replica, now: float, rng: random.Random) -> Replica:
        """The replica `caller`'s own round_robin picker takes next, among those its channel knows."""
        if caller.endpoints_seen != self.endpoints:
            caller.endpoints_seen = self.endpoints
            if any(replica.draining for replica in caller.known):
                caller.known = ()  # its connection closed: the channel resolves at once
        if not caller.known:
            self._resolve(caller, now, rng)
        elif caller.resolves_at <= now:  # resolved at each connection age since; the last one counts
            period = self._period(caller)
            self._resolve(caller, caller.resolves_at + (now - caller.resolves_at) // period * period, rng)
        choices = caller.known or self._choices(now)
        caller.picked += 1
        return choices[caller.picked % len(choices)]

    def _resolve(self, caller: Replica, at: float, rng: random.Random) -> None:
        """The caller's channel resolves the pool's name `at` then: the replicas ready by then."""
        if caller.endpoints_known != self.endpoints:  # else it knows every ready replica already
            known = tuple(replica for replica in self.ready if replica.ready_at <= at)
            if known != caller.known:
                caller.known, caller.picked = known, rng.randrange(len(known)) if known else 0
            if len(known) == len(self.ready):
                caller.endpoints_known = self.endpoints
        caller.resolves_at = at + self._period(caller) * rng.uniform(1 - CONNECTION_AGE_JITTER,
                                                                     1 + CONNECTION_AGE_JITTER)

    @staticmethod
    def _period(caller: Replica) -> float:
        """How often one of the caller's connections (one per replica it knows, opened at
        different moments) reaches the servers' age, no closer than the resolver's interval."""
        return max(RESOLUTION_INTERVAL_SECONDS, CONNECTION_AGE_SECONDS / max(1, len(caller.known)))

    def _choices(self, now: float) -> list[Replica]:
        choices = self.ready or self.live
        if not choices:
            raise SimulationError(f"at {now:.3f} s: pool {self.model.name} has no replicas to take a request "
                                  f"(replicas: 0 without autoscaling)")
        return choices


@dataclass(slots=True)
class Outcome:
    """One request's result."""

    arrival: float
    start: float
    finish: float
    workflow: str
    lora_blocked_seconds: float

    @property
    def latency(self) -> float:
        return self.finish - self.arrival


@dataclass
class Result:
    outcomes: list[Outcome] | None  # every request's, in arrival order; None with keep_outcomes=False
    latencies: dict[str, Latencies]  # per workflow with requests: exact, or histograms with keep_outcomes=False
    lora_blocked_requests: int
    lora_blocked_seconds: float
    pools: dict[str, PoolState]
    cache_hits: dict[str, int]
    cache_lookups: dict[str, int]
    end: float
    events: int


@dataclass(eq=False, slots=True)
class _Route:
    """One workflow's pools and the parts of its requests' work it fixes, resolved once."""

    workflow: str
    base: PoolState
    controlnets: PoolState | None  # the pool running its ControlNets apart from the base pod
    work: service.WorkflowWork
    latencies: LatencyHistogram


@dataclass(frozen=True, slots=True)
class _Shape:
    """What one shape of request costs, computed once per shape."""

    alone: service.Timing  # with no other session on its ControlNet replica
    decoupled: service.Decoupled | None  # its timing at any ControlNet slowdown (None: monolithic)
    share: float = 0.0  # a decoupled ControlNet session's load on its ControlNet replica


class _Job:
    """A request in flight, with what its completion needs."""

    __slots__ = ("request", "index", "route", "replica", "start", "blocked", "controlnet", "share", "decode")

    def __init__(self, request: Request, index: int, route: _Route) -> None:
        self.request, self.index, self.route = request, index, route
        self.controlnet: Replica | None = None


class Simulation:
    def __init__(self, fleet: Fleet, workflows: Sequence[m.Workflow], profile: Profile, *,
                 monolithic: bool = False, shared_cores: float | None = None, first_sync: float | None = None,
                 seed: int = 0, slowdown: Callable[[float], float] | None = None, scrape_phase: float = 0.0) -> None:
        """`first_sync`: when the HPAs first sync (default: one period in); a real controller's
        phase is its own, so a replay of a measured run passes the measured one. `seed`: of
        the pickers' random starts. `slowdown`: seconds -> how much slower than the profile the
        replicas serve then; a request started at that moment takes that much longer (a replay
        of a measured run on hardware whose speed drifts passes the measured speed).
        `scrape_phase`: when the first scrape falls, within the scrape interval (Prometheus
        spreads its targets over the interval, so a replay averages over it)."""
        self.fleet, self.profile, self.monolithic = fleet, profile, monolithic
        self.rng = random.Random(seed)
        turns = random.Random(f"services-{seed}")  # apart from the pickers' draws, which stay as they were
        self.first_sync = fleet.sync_period if first_sync is None else first_sync
        self.host = SharedHost(shared_cores) if shared_cores else None
        self.host_version = 0
        self.slowdown, self.scrape_phase = slowdown, scrape_phase
        self.pools = {name: PoolState(pool) for name, pool in fleet.pools.items()}
        for state in self.pools.values():
            state.callers = [self.pools[c] for c in state.model.callers if c in self.pools]
            state.turn = turns.randrange(1 << 16)
        self.autoscaled = [state for state in self.pools.values() if state.model.autoscaling.enabled]
        self.routes = {wf.name: self._route(wf) for wf in workflows}
        self.events: list[tuple[float, int, int, object]] = []
        self._seq = itertools.count()
        self._shape = lru_cache(maxsize=SHAPES_CACHED)(self._new_shape)
        self.finished: list[tuple[int, Outcome]] = []  # (arrival index, outcome), when outcomes are kept
        self.blocked_requests, self.blocked_seconds = 0, 0.0  # when they are not
        for state in self.pools.values():
            self._add_replicas(state, state.model.replicas, 0.0, ready_at=0.0)

    def _route(self, wf: m.Workflow) -> _Route:
        controlnets = self.fleet.controlnet_pool[wf.name]
        return _Route(wf.name, self.pools[self.fleet.base_pool[wf.name]],
                      None if self.monolithic or controlnets is None else self.pools[controlnets],
                      service.WorkflowWork.of(wf), LatencyHistogram())

    def _new_shape(self, route: _Route, steps: int, pixels: int, controlnets: int, lora_ks: tuple[int, ...],
                   misses: int) -> _Shape:
        work = route.work.work(steps, pixels, controlnets, lora_ks, misses)
        if self.monolithic:
            return _Shape(service.monolithic(self.profile, work), None)
        decoupled = service.Decoupled.of(self.profile, work)
        return _Shape(decoupled.timing(), decoupled, service.controlnet_share(self.profile, work))

    def _push(self, time: float, kind: int, payload: object) -> None:
        heapq.heappush(self.events, (time, next(self._seq), kind, payload))

    def _after(self, now: float, seconds: float, cpu_seconds: float, kind: int, payload: object) -> None:
        """`kind` happens once `seconds` of work are done: then, or later on a crowded shared host,
        where the work keeps `cpu_seconds / seconds` cores busy."""
        if self.host is None:
            self._push(now + seconds, kind, payload)
            return
        self.host.add(now, seconds, cpu_seconds / seconds if seconds else 1.0, (kind, payload))
        self._reschedule_host()

    def _reschedule_host(self) -> None:
        """One pending event for the host's earliest finish; a change of sharing voids the last."""
        self.host_version += 1
        finish = self.host.next_finish()
        if finish is not None:
            self._push(finish, SHARED, self.host_version)

    def _add_replicas(self, state: PoolState, count: int, now: float, ready_at: float) -> None:
        holds_cache = state.model.role != BASE or self.monolithic
        for _ in range(count):
            cache = LruNames(state.model.cache_bytes, self.profile.controlnet_bytes) if holds_cache else None
            replica = Replica(state.model.name, now, float("inf"), cache)
            state.replicas.append(replica)
            state.live.append(replica)
            if ready_at > now:
                self._after(now, ready_at - now, ready_at - now, READY, replica)
            else:
                self._ready(replica, now)
        state.timeline.append((now, len(state.live)))

    def _ready(self, replica: Replica, now: float) -> None:
        replica.ready_at = now
        if not replica.draining:
            state = self.pools[replica.pool]
            state.ready.append(replica)
            state.endpoints += 1
        self._start_next(replica, now)

    def _remove_replicas(self, state: PoolState, count: int, now: float) -> None:
        """As a ReplicaSet picks, knowing nothing of the requests in a pod: unready replicas first,
        then the one ready for the least time, then the newest (kube-controller-manager's
        ActivePodsWithRanks, its node and restart ranks aside)."""
        order = sorted(state.live, key=lambda r: (r.ready_at <= now, -r.ready_at, -r.created))
        for replica in order[:count]:
            replica.draining = True
            state.live.remove(replica)
            if replica in state.ready:
                state.ready.remove(replica)
                state.endpoints += 1
            if replica.idle:
                replica.remove(now)
        state.timeline.append((now, len(state.live)))

    def run(self, requests: Iterable[Request], *, keep_outcomes: bool = True) -> Result:
        """Replays `requests` (in arrival order) until the last one finishes. With
        `keep_outcomes=False` the result has latency histograms instead of every outcome."""
        if self.autoscaled:
            self._push(self.first_sync, POLL, None)
            if self.fleet.scrape_interval:
                self._push(self.scrape_phase, SCRAPE, None)
        record = self._keep if keep_outcomes else self._tally
        arrivals = iter(requests)
        upcoming = next(arrivals, None)
        heap, pop = self.events, heapq.heappop
        now, last_arrival, events, arrived, open_requests = 0.0, -math.inf, 0, 0, 0
        while upcoming is not None or (open_requests and heap):
            if upcoming is not None and (not heap or upcoming.arrival <= heap[0][0]):
                if upcoming.arrival < last_arrival:
                    raise SimulationError(f"request {arrived} arrives at {upcoming.arrival} s, before the one "
                                          f"before it ({last_arrival} s): requests must be in arrival order")
                now = last_arrival = upcoming.arrival
                events += 1
                self._arrive(_Job(upcoming, arrived, self.routes[upcoming.workflow]), now)
                arrived += 1
                open_requests += 1
                upcoming = next(arrivals, None)
                continue
            now, _, kind, payload = pop(heap)
            events += 1
            if kind == RELEASE:
                open_requests -= self._release(payload, now, record)
            elif kind == DONE:
                self._done(payload, now, record)
                open_requests -= 1
            elif kind == SHARED:
                if payload != self.host_version:
                    continue  # the sharing changed since: a newer event stands for the host
                for kind, payload in self.host.finished(now):
                    if kind == RELEASE:
                        open_requests -= self._release(payload, now, record)
                    elif kind == DONE:
                        self._done(payload, now, record)
                        open_requests -= 1
                    else:
                        self._ready(payload, now)
                self._reschedule_host()
            elif kind == READY:
                self._ready(payload, now)
            elif kind == SCRAPE:
                for state in self.autoscaled:
                    state.scraped_demand = self._demand(state)
                self._push(now + self.fleet.scrape_interval, SCRAPE, None)
            else:
                self._poll(now)
                self._push(now + self.fleet.sync_period, POLL, None)
        for state in self.pools.values():
            for replica in state.replicas:
                replica.removed = now if replica.removed is None else replica.removed
        return self._result(keep_outcomes, now, events)

    def _result(self, keep_outcomes: bool, end: float, events: int) -> Result:
        hits = {name: state.cache_hits for name, state in self.pools.items()}
        lookups = {name: state.cache_lookups for name, state in self.pools.items()}
        if not keep_outcomes:
            latencies = {name: route.latencies for name, route in self.routes.items() if route.latencies.count}
            return Result(None, latencies, self.blocked_requests, self.blocked_seconds, self.pools, hits, lookups,
                          end, events)
        outcomes = [outcome for _, outcome in sorted(self.finished, key=lambda pair: pair[0])]
        by_workflow: dict[str, list[float]] = defaultdict(list)
        for outcome in outcomes:
            by_workflow[outcome.workflow].append(outcome.latency)
        blocked = [o.lora_blocked_seconds for o in outcomes]
        return Result(outcomes, {name: ExactLatencies(values) for name, values in by_workflow.items()},
                      sum(b > 0 for b in blocked), sum(blocked), self.pools, hits, lookups, end, events)

    def _keep(self, job: _Job, now: float) -> None:
        request = job.request
        self.finished.append((job.index, Outcome(request.arrival, job.start, now, request.workflow, job.blocked)))

    def _tally(self, job: _Job, now: float) -> None:
        job.route.latencies.add(now - job.request.arrival)
        if job.blocked > 0:
            self.blocked_requests += 1
            self.blocked_seconds += job.blocked

    def _arrive(self, job: _Job, now: float) -> None:
        state = job.route.base
        replica = state.next_replica(now)
        replica.queue.append(job)
        state.in_flight += 1
        self._start_next(replica, now)

    def _start_next(self, replica: Replica, now: float, after_another: bool = False) -> bool:
        """Starts the replica's next request, if it can take one now. `after_another`: the
        replica's worker has just been freed by a request that goes on to decode (so this one
        starts beside that decode: the profile's `queued_slowdown`)."""
        if replica.busy or not replica.queue or replica.ready_at > now:
            return False
        job = replica.queue.popleft()
        replica.busy = True
        timing, cpu = self._serve(job, replica, now)
        job.replica, job.start, job.blocked = replica, now, timing.lora_blocked_seconds
        p = self.profile
        slower = 1.0 if self.slowdown is None else self.slowdown(now)
        decode = min(timing.seconds, p.decode_seconds * job.request.width * job.request.height
                     / (p.reference_width * p.reference_height))
        job.decode = decode * slower
        worker = slower * (p.queued_slowdown if after_another else 1.0)
        self._after(now, (timing.seconds - decode) * worker, (cpu - decode) * worker, RELEASE, job)
        return True

    def _lookups(self, replica: Replica, state: PoolState, names: Sequence[str]) -> int:
        get, misses = replica.cache.get, 0
        for name in names:
            if not get(name):
                misses += 1
        state.cache_hits += len(names) - misses
        state.cache_lookups += len(names)
        return misses

    def _serve(self, job: _Job, replica: Replica, now: float) -> tuple[service.Timing, float]:
        """How long the request holds its replica, and the CPU seconds it keeps busy meanwhile
        (only a shared host asks)."""
        request, route = job.request, job.route
        names, cn_pool = request.controlnets, route.controlnets
        cn = None if cn_pool is None or not names else cn_pool.pick_for(replica, now, self.rng)
        if cn is None:
            misses = self._lookups(replica, route.base, names) if self.monolithic else 0
        else:
            misses = self._lookups(cn, cn_pool, names)
        # a ControlNet replica's misses load there (`_load`), not in the base replica's shape
        shape = self._shape(route, request.steps, request.width * request.height, len(names),
                            route.work.lora_ks(request.loras), misses if cn is None else 0)
        if cn is None:
            return shape.alone, shape.alone.seconds
        load = self._load(cn, misses, now)
        cn.load += shape.share
        cn.sessions += 1
        cn_pool.in_flight += 1
        job.controlnet, job.share = cn, shape.share
        slowdown = max(1.0, cn.load)
        timing = shape.alone if slowdown == 1.0 else shape.decoupled.timing(slowdown)
        if load:
            timing = service.Timing(timing.seconds + load, timing.lora_blocked_seconds)
        if self.host is None:
            return timing, timing.seconds
        return timing, (service.cpu_seconds(self.profile, shape.decoupled.work, timing, slowdown)
                        - load + misses * self.profile.controlnet_load_seconds)

    def _load(self, cn: Replica, misses: int, now: float) -> float:
        """Seconds the session's cache misses take to load on `cn`: flat out, beside the steps of
        its open sessions and the other loads in progress, on one device shared as processor
        sharing does (so a new replica that every caller finds at once loads slowly)."""
        cn.loading_until = [end for end in cn.loading_until if end > now]
        if not misses:
            return 0.0
        seconds = misses * self.profile.controlnet_load_seconds * (1.0 + cn.load + len(cn.loading_until))
        cn.loading_until.append(now + seconds)
        return seconds

    def _release(self, job: _Job, now: float, record: Callable[[_Job, float], None]) -> bool:
        """The loop is done: the worker takes the next request from the queue, and this one
        decodes, beside it if there was one (the profile's `queued_decode_slowdown`). True
        if the request is finished (nothing to decode)."""
        replica, route = job.replica, job.route
        replica.busy = False
        cn = job.controlnet
        if cn is not None:
            cn.load -= job.share
            cn.sessions -= 1
            route.controlnets.in_flight -= 1
            if cn.draining and cn.idle:
                cn.remove(now)
        beside = self._start_next(replica, now, after_another=True)
        if not job.decode:
            self._done(job, now, record)
            return True
        replica.decoding += 1
        stretch = self.profile.queued_decode_slowdown if beside else 1.0
        self._after(now, job.decode * stretch, job.decode, DONE, job)
        return False

    def _done(self, job: _Job, now: float, record: Callable[[_Job, float], None]) -> None:
        record(job, now)
        replica = job.replica
        job.route.base.in_flight -= 1
        if job.decode:
            replica.decoding -= 1
        if replica.draining and replica.idle:
            replica.remove(now)

    def _demand(self, state: PoolState) -> int:
        if not state.model.callers:
            return state.in_flight
        return max(state.in_flight, sum(caller.in_flight for caller in state.callers))

    def _poll(self, now: float) -> None:
        for state in self.autoscaled:
            scaling = state.model.autoscaling
            current = len(state.live)
            demand = state.scraped_demand if self.fleet.scrape_interval else self._demand(state)
            if current and abs(demand / (scaling.target_in_flight_per_replica * current) - 1) <= HPA_TOLERANCE:
                desired = current
            else:
                desired = min(desired_replicas(demand, scaling), current + max(HPA_SCALE_UP_PODS, current))
            window = state.desired_window
            while window and window[-1][1] <= desired:
                window.pop()  # older and no higher: never the window's highest again
            window.append((now, desired))
            while window[0][0] < now - scaling.scale_down_stabilization_seconds:
                window.popleft()
            target = desired if desired >= current else window[0][1]
            if target > current:
                self._add_replicas(state, target - current, now, now + self.profile.pod_start_seconds)
            elif target < current:
                self._remove_replicas(state, current - target, now)
