"""Designs at an equal GPU budget: every design gets the same number of GPUs, held throughout.

A budget is GPUs provisioned, so under one every pool has a fixed replica count (autoscaling
off): a design that autoscaled would hold fewer GPUs at times, and the comparison would mix
cost with latency (comparing the designs as written does that). The GPUs are split by each
pool's offered load: the GPU-seconds of service the trace asks of it with no queueing, no
cache misses and no ControlNet contention, from the same service model the simulation runs.
Every pool keeps one replica (it must serve its workflow); the rest go one replica at a time
to the pool with the most offered load per GPU it holds (highest averages, as D'Hondt
apportions seats), so pools end up equally loaded per GPU up to whole replicas. A pool of
two-GPU replicas (latent parallelism) takes two GPUs a replica, so it gets half as many.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

from swiftdiffusion.operator import model as m
from swiftdiffusion.operator import render
from swiftdiffusion.planner import fleet, service
from swiftdiffusion.planner.profile import Profile
from swiftdiffusion.planner.trace import Request


def offered_load(plan: fleet.Fleet, workflows: Sequence[m.Workflow], requests: Sequence[Request], profile: Profile,
                 *, monolithic: bool) -> dict[str, float]:
    """GPU-seconds each pool serves the trace for, uncontended: a base replica is held for the
    whole request; a ControlNet replica for its share of every step."""
    by_name = {wf.name: wf for wf in workflows}
    load = dict.fromkeys(plan.pools, 0.0)
    for request in requests:
        work = service.request_work(by_name[request.workflow], request)
        base = plan.base_pool[request.workflow]
        held = service.monolithic(profile, work) if monolithic else service.decoupled(profile, work)
        load[base] += held.seconds * plan.pools[base].gpus
        cn = plan.controlnet_pool[request.workflow]
        if not monolithic and cn is not None and work.controlnets:
            busy = work.steps * service.decoupled_step(profile, work, 1.0) * service.controlnet_share(profile, work)
            load[cn] += busy * plan.pools[cn].gpus
    return load


def allocate(budget_gpus: int, load: Mapping[str, float], gpus: Mapping[str, int]) -> dict[str, int]:
    """Replicas per pool: one each, then one at a time to the pool with the most load per GPU
    held (ties: the pool holding fewest GPUs) among those whose next replica still fits. GPUs
    that fit no replica (an odd budget for two-GPU replicas) stay unused."""
    floor = sum(gpus[pool] for pool in load)
    if budget_gpus < floor:
        raise ValueError(f"a budget of {budget_gpus} GPUs is less than one replica per pool ({floor} GPUs)")
    replicas = dict.fromkeys(load, 1)
    spare = budget_gpus - floor
    while fits := [pool for pool in load if gpus[pool] <= spare]:
        pool = max(fits, key=lambda p: (load[p] / (replicas[p] * gpus[p]), -replicas[p] * gpus[p]))
        replicas[pool] += 1
        spare -= gpus[pool]
    return replicas


def provisioned(workflows: Sequence[m.Workflow], replicas: Mapping[str, int]) -> list[m.Workflow]:
    """The workflows with each of their pools at `replicas` and autoscaling off. A shared
    pool's replicas are its oldest member's, so every member is given the pool's count."""
    fixed = {"autoscaling": m.Autoscaling()}
    out = []
    for wf in workflows:
        sections = {"base_pool": {"replicas": replicas[render.base_pool_name(wf.name)], **fixed}}
        cn = render.controlnet_pool_name(wf)
        if cn in replicas:
            sections["controlnet_pool"] = {"replicas": replicas[cn], **fixed}
        out.append(fleet.with_spec(wf, **sections))
    return out


def within_budget(workflows: Sequence[m.Workflow], requests: Sequence[Request], profile: Profile, budget_gpus: int,
                  *, monolithic: bool) -> list[m.Workflow]:
    """`workflows` (one design's) provisioned with `budget_gpus` GPUs split by offered load."""
    plan = fleet.build(workflows, monolithic=monolithic)
    load = offered_load(plan, workflows, requests, profile, monolithic=monolithic)
    return provisioned(workflows, allocate(budget_gpus, load, {name: pool.gpus for name, pool in plan.pools.items()}))
