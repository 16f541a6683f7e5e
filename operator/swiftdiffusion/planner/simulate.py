"""Discrete-event replay of a trace through a `Fleet`.

Base replicas serve one request at a time from their own queue; requests reach them
round-robin (the gRPC round_robin policy over the pool Service's ready endpoints), and so
do a base request's ControlNet sessions over its ControlNet pool. Autoscaled pools are
resized every polling interval as the HPA does for the operator's ScaledObjects: desired
= ceil(demand / target) within the bounds, demand = the pool's in-flight calls (a
ControlNet pool: max(own sessions, sum of its callers' in-flight)), scale-up at most
max(4 pods, 100%) per sync (the HPA's default policy), scale-down to the highest desired
count of the stabilization window. New replicas serve after the profile's pod start; a
removed replica takes no new request and leaves when its queue is empty.
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
from swiftdiffusion.planner.profile import Profile
from swiftdiffusion.planner.trace import Request

ARRIVE, DONE, READY, POLL = range(4)
HPA_SCALE_UP_PODS = 4  # the HPA's default scale-up policy: max(4 pods, 100%) per period


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
    replicas: list[Replica] = field(default_factory=list)
    turn: int = 0
    in_flight: int = 0
    desired_log: deque[tuple[float, int]] = field(default_factory=deque)
    timeline: list[tuple[float, int]] = field(default_factory=list)

    def active(self) -> list[Replica]:
        return [r for r in self.replicas if not r.draining]

    def next_replica(self, now: float) -> Replica:
        """Round-robin over ready replicas (any starting one if none is ready yet)."""
        active = self.active()
        ready = [r for r in active if r.ready_at <= now] or active
        self.turn += 1
        return ready[self.turn % len(ready)]


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
                 monolithic: bool = False) -> None:
        self.fleet, self.profile, self.monolithic = fleet, profile, monolithic
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

    def _add_replicas(self, state: PoolState, count: int, now: float, ready_at: float) -> None:
        holds_cache = state.model.role != BASE or self.monolithic
        for _ in range(count):
            cache = LruNames(state.model.cache_bytes, self.profile.controlnet_bytes) if holds_cache else None
            replica = Replica(state.model.name, now, ready_at, cache)
            state.replicas.append(replica)
            if ready_at > now:
                self._push(ready_at, READY, replica)
        state.timeline.append((now, len(state.active())))

    def _remove_replicas(self, state: PoolState, count: int, now: float) -> None:
        """Unready replicas go first, then idle ones, then the least loaded (as a ReplicaSet picks)."""
        order = sorted(state.active(), key=lambda r: (r.ready_at <= now, not r.idle, len(r.queue), r.load))
        for replica in order[:count]:
            replica.draining = True
            if replica.idle:
                replica.removed = now
        state.timeline.append((now, len(state.active())))

    def run(self, requests: Sequence[Request]) -> Result:
        for i, request in enumerate(requests):
            self._push(request.arrival, ARRIVE, i)
        if any(p.model.autoscaling.enabled for p in self.pools.values()):
            self._push(self.fleet.polling_interval, POLL, None)
        self.requests, self.outcomes = requests, [None] * len(requests)
        self.open_sessions: dict[int, tuple[Replica, float]] = {}
        remaining, now, events = len(requests), 0.0, 0
        while self.events and remaining:
            now, _, kind, payload = heapq.heappop(self.events)
            events += 1
            if kind == ARRIVE:
                self._arrive(payload, now)
            elif kind == DONE:
                remaining -= 1
                self._done(payload, now)
            elif kind == READY:
                self._start_next(payload, now)
            else:
                self._poll(now)
                self._push(now + self.fleet.polling_interval, POLL, None)
        for state in self.pools.values():
            for replica in state.replicas:
                replica.removed = now if replica.removed is None else replica.removed
        return Result(self.outcomes, self.pools, self.cache_hits, self.cache_lookups, now, events)

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
        request = self.requests[index]
        timing = self._serve(index, request, replica, now)
        self.outcomes[index] = Outcome(request.arrival, now, now + timing.seconds, request.workflow,
                                       timing.lora_blocked_seconds)
        self._push(now + timing.seconds, DONE, (replica, index))

    def _work(self, request: Request, misses: int) -> service.Work:
        wf = self.workflows[request.workflow]
        declared = {lora.name: lora.k for lora in wf.spec.loras}
        ks = [declared.get(name) or wf.spec.serving.bal_default_k for name in request.loras]
        return service.Work(request.steps, request.width * request.height, len(request.controlnets), ks, misses,
                            wf.spec.serving.latent_parallelism == m.LatentParallelism.ENABLED)

    def _lookups(self, replica: Replica, request: Request) -> int:
        misses = sum(not replica.cache.get(name) for name in request.controlnets)
        self.cache_hits[replica.pool] += len(request.controlnets) - misses
        self.cache_lookups[replica.pool] += len(request.controlnets)
        return misses

    def _serve(self, index: int, request: Request, replica: Replica, now: float) -> service.Timing:
        pool_name = self.fleet.controlnet_pool[request.workflow]
        if self.monolithic or not request.controlnets or pool_name is None:
            misses = self._lookups(replica, request) if self.monolithic else 0
            work = self._work(request, misses)
            return service.monolithic(self.profile, work) if self.monolithic else service.decoupled(self.profile, work)
        cn_pool = self.pools[pool_name]
        cn = cn_pool.next_replica(now)
        work = self._work(request, self._lookups(cn, request))
        share = service.controlnet_share(self.profile, work)
        cn.load += share
        cn.sessions += 1
        cn_pool.in_flight += 1
        self.open_sessions[index] = (cn, share)
        return service.decoupled(self.profile, work, max(1.0, cn.load))

    def _done(self, payload: tuple[Replica, int], now: float) -> None:
        replica, index = payload
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
            current = len(state.active())
            desired = min(desired_replicas(self._demand(state), scaling), current + max(HPA_SCALE_UP_PODS, current))
            state.desired_log.append((now, desired))
            while state.desired_log[0][0] <= now - scaling.scale_down_stabilization_seconds:
                state.desired_log.popleft()
            target = desired if desired >= current else max(d for _, d in state.desired_log)
            if target > current:
                self._add_replicas(state, target - current, now, now + self.profile.pod_start_seconds)
            elif target < current:
                self._remove_replicas(state, current - target, now)
