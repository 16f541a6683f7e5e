"""Discrete-event replay of a trace through a `Fleet`.

Base replicas serve one request at a time from their own queue; requests reach them
round-robin (the gRPC round_robin policy over the pool Service's ready endpoints), and so
do a base request's ControlNet sessions over its ControlNet pool. Autoscaled pools are
resized every HPA sync period as the HPA does for the operator's ScaledObjects: desired
= ceil(demand / target) within the bounds, unchanged within the HPA's 10% tolerance,
demand = the pool's in-flight calls (a ControlNet pool: max(own sessions, sum of its
callers' in-flight)), scale-up at most max(4 pods, 100%) per sync (the HPA's default
policy), scale-down to the highest desired count of the stabilization window. New
replicas serve after the profile's pod start; a removed replica takes no new request and
leaves when its queue is empty.

With `shared_cores` every replica runs on one host of that many cores (the CPU test bed;
GPUs time-sliced between pods): busy replicas and starting pods share them as a processor
-sharing queue, each running at min(1, cores / demand) of its own speed, where demand is
the summed CPU intensity of the work in progress.
"""
from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from swiftdiffusion.operator import model as m
from swiftdiffusion.operator.render import BASE
from swiftdiffusion.planner import service
from swiftdiffusion.planner.cache import LruNames
from swiftdiffusion.planner.fleet import Fleet, PoolModel, desired_replicas
from swiftdiffusion.planner.host import SharedHost
from swiftdiffusion.planner.profile import Profile
from swiftdiffusion.planner.trace import Request

ARRIVE, DONE, READY, POLL, SHARED = range(5)
HPA_SCALE_UP_PODS = 4  # the HPA's default scale-up policy: max(4 pods, 100%) per period
HPA_TOLERANCE = 0.1  # the HPA leaves replicas alone while demand / (target x replicas) is within 10% of 1


class SimulationError(ValueError):
    """A trace the fleet cannot serve at all (a request for a pool with no replicas)."""


@dataclass(eq=False)
class Replica:
    pool: str
    created: float
    ready_at: float
    cache: LruNames | None
    queue: deque[int] = field(default_factory=deque)
    busy: bool = False
    draining: bool = False
    removed: float | None = None
    load: float = 0.0  # a ControlNet replica: the summed share of its open sessions
    sessions: int = 0

    @property
    def idle(self) -> bool:
        return not self.busy and not self.queue and not self.sessions


@dataclass(eq=False)
class PoolState:
    model: PoolModel
    replicas: list[Replica] = field(default_factory=list)  # every replica it ever had
    live: list[Replica] = field(default_factory=list)  # not draining: the Deployment's replicas
    ready: list[Replica] = field(default_factory=list)  # live and serving: the Service's endpoints
    turn: int = 0
    in_flight: int = 0
    desired_log: deque[tuple[float, int]] = field(default_factory=deque)
    timeline: list[tuple[float, int]] = field(default_factory=list)

    def next_replica(self, now: float) -> Replica:
        """Round-robin over ready replicas (any starting one if none is ready yet)."""
        choices = self.ready or self.live
        if not choices:
            raise SimulationError(f"at {now:.3f} s: pool {self.model.name} has no replicas to take a request "
                                  f"(replicas: 0 without autoscaling)")
        self.turn += 1
        return choices[self.turn % len(choices)]


@dataclass
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
    outcomes: list[Outcome]
    pools: dict[str, PoolState]
    cache_hits: dict[str, int]
    cache_lookups: dict[str, int]
    end: float
    events: int


class Simulation:
    def __init__(self, fleet: Fleet, workflows: Sequence[m.Workflow], profile: Profile, *,
                 monolithic: bool = False, shared_cores: float | None = None) -> None:
        self.fleet, self.profile, self.monolithic = fleet, profile, monolithic
        self.host = SharedHost(shared_cores) if shared_cores else None
        self.host_version = 0
        self.workflows: Mapping[str, m.Workflow] = {wf.name: wf for wf in workflows}
        self.pools = {name: PoolState(pool) for name, pool in fleet.pools.items()}
        self.events: list[tuple[float, int, int, object]] = []
        self._seq = itertools.count()
        self.cache_hits = dict.fromkeys(self.pools, 0)
        self.cache_lookups = dict.fromkeys(self.pools, 0)
        for state in self.pools.values():
            self._add_replicas(state, state.model.replicas, 0.0, ready_at=0.0)

    def _push(self, time: float, kind: int, payload: object) -> None:
        heapq.heappush(self.events, (time, next(self._seq), kind, payload))

    def _after(self, now: float, seconds: float, intensity: float, kind: int, payload: object) -> None:
        """`kind` happens once `seconds` of work are done: then, or later on a crowded shared host."""
        if self.host is None:
            self._push(now + seconds, kind, payload)
            return
        self.host.add(now, seconds, intensity, (kind, payload))
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
                self._after(now, ready_at - now, 1.0, READY, replica)
            else:
                self._ready(replica, now)
        state.timeline.append((now, len(state.live)))

    def _ready(self, replica: Replica, now: float) -> None:
        replica.ready_at = now
        if not replica.draining:
            self.pools[replica.pool].ready.append(replica)
        self._start_next(replica, now)

    def _remove_replicas(self, state: PoolState, count: int, now: float) -> None:
        """Unready replicas go first, then idle ones, then the least loaded (as a ReplicaSet picks)."""
        order = sorted(state.live, key=lambda r: (r.ready_at <= now, not r.idle, len(r.queue), r.load))
        for replica in order[:count]:
            replica.draining = True
            state.live.remove(replica)
            if replica in state.ready:
                state.ready.remove(replica)
            if replica.idle:
                replica.removed = now
        state.timeline.append((now, len(state.live)))

    def run(self, requests: Sequence[Request]) -> Result:
        for i, request in enumerate(requests):
            self._push(request.arrival, ARRIVE, i)
        if any(p.model.autoscaling.enabled for p in self.pools.values()):
            self._push(self.fleet.sync_period, POLL, None)
        self.requests, self.outcomes = requests, [None] * len(requests)
        self.open_sessions: dict[int, tuple[Replica, float]] = {}
        self.started: dict[int, tuple[float, float]] = {}
        remaining, now, events = len(requests), 0.0, 0
        while self.events and remaining:
            now, _, kind, payload = heapq.heappop(self.events)
            events += 1
            if kind == SHARED:
                if payload != self.host_version:
                    continue  # the sharing changed since: a newer event stands for the host
                for kind, payload in self.host.finished(now):
                    remaining -= self._handle(kind, payload, now)
                self._reschedule_host()
            else:
                remaining -= self._handle(kind, payload, now)
        for state in self.pools.values():
            for replica in state.replicas:
                replica.removed = now if replica.removed is None else replica.removed
        return Result(self.outcomes, self.pools, self.cache_hits, self.cache_lookups, now, events)

    def _handle(self, kind: int, payload: object, now: float) -> int:
        """Applies one event; returns how many requests it finished."""
        if kind == ARRIVE:
            self._arrive(payload, now)
        elif kind == DONE:
            self._done(payload, now)
            return 1
        elif kind == READY:
            self._ready(payload, now)
        else:
            self._poll(now)
            self._push(now + self.fleet.sync_period, POLL, None)
        return 0

    def _arrive(self, index: int, now: float) -> None:
        state = self.pools[self.fleet.base_pool[self.requests[index].workflow]]
        replica = state.next_replica(now)
        replica.queue.append(index)
        state.in_flight += 1
        self._start_next(replica, now)

    def _start_next(self, replica: Replica, now: float) -> None:
        if replica.busy or not replica.queue or replica.ready_at > now:
            return
        index = replica.queue.popleft()
        replica.busy = True
        timing, cpu = self._serve(index, self.requests[index], replica, now)
        self.started[index] = (now, timing.lora_blocked_seconds)
        self._after(now, timing.seconds, cpu / timing.seconds if timing.seconds else 1.0, DONE, (replica, index))

    def _lookups(self, replica: Replica, request: Request) -> int:
        misses = sum(not replica.cache.get(name) for name in request.controlnets)
        self.cache_hits[replica.pool] += len(request.controlnets) - misses
        self.cache_lookups[replica.pool] += len(request.controlnets)
        return misses

    def _serve(self, index: int, request: Request, replica: Replica, now: float) -> tuple[service.Timing, float]:
        """How long the request holds its replica, and the CPU seconds it keeps busy meanwhile."""
        pool_name = self.fleet.controlnet_pool[request.workflow]
        if self.monolithic or not request.controlnets or pool_name is None:
            misses = self._lookups(replica, request) if self.monolithic else 0
            work = service.request_work(self.workflows[request.workflow], request, misses)
            timing = service.monolithic(self.profile, work) if self.monolithic else service.decoupled(self.profile, work)
            return timing, timing.seconds
        cn_pool = self.pools[pool_name]
        cn = cn_pool.next_replica(now)
        work = service.request_work(self.workflows[request.workflow], request, self._lookups(cn, request))
        share = service.controlnet_share(self.profile, work)
        cn.load += share
        cn.sessions += 1
        cn_pool.in_flight += 1
        self.open_sessions[index] = (cn, share)
        slowdown = max(1.0, cn.load)
        timing = service.decoupled(self.profile, work, slowdown)
        return timing, service.cpu_seconds(self.profile, work, timing, slowdown)

    def _done(self, payload: tuple[Replica, int], now: float) -> None:
        replica, index = payload
        start, blocked = self.started.pop(index)
        request = self.requests[index]
        self.outcomes[index] = Outcome(request.arrival, start, now, request.workflow, blocked)
        replica.busy = False
        self.pools[replica.pool].in_flight -= 1
        session = self.open_sessions.pop(index, None)
        if session is not None:
            cn, share = session
            cn.load -= share
            cn.sessions -= 1
            self.pools[cn.pool].in_flight -= 1
            if cn.draining and cn.idle:
                cn.removed = now
        if replica.draining and replica.idle:
            replica.removed = now
            return
        self._start_next(replica, now)

    def _demand(self, state: PoolState) -> int:
        if not state.model.callers:
            return state.in_flight
        return max(state.in_flight, sum(self.pools[c].in_flight for c in state.model.callers if c in self.pools))

    def _poll(self, now: float) -> None:
        for state in self.pools.values():
            scaling = state.model.autoscaling
            if not scaling.enabled:
                continue
            current = len(state.live)
            demand = self._demand(state)
            if current and abs(demand / (scaling.target_in_flight_per_replica * current) - 1) <= HPA_TOLERANCE:
                desired = current
            else:
                desired = min(desired_replicas(demand, scaling), current + max(HPA_SCALE_UP_PODS, current))
            state.desired_log.append((now, desired))
            while state.desired_log[0][0] < now - scaling.scale_down_stabilization_seconds:
                state.desired_log.popleft()
            target = desired if desired >= current else max(d for _, d in state.desired_log)
            if target > current:
                self._add_replicas(state, target - current, now, now + self.profile.pod_start_seconds)
            elif target < current:
                self._remove_replicas(state, current - target, now)
