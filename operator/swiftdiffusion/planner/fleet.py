"""The pools a set of workflows makes, decided by the operator's own render functions.

`monolithic` is the diffusers-style baseline the paper compares with: no ControlNet pool,
every base replica runs its workflow's ControlNets itself, serially, with its own cache.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from swiftdiffusion.operator import model as m
from swiftdiffusion.operator import render

# kube-controller-manager's --horizontal-pod-autoscaler-sync-period default: the HPA reads the
# metric and resizes at this period; KEDA's pollingInterval only decides activation from zero,
# which the CRD refuses (minReplicas >= 1 when autoscaling is on).
HPA_SYNC_SECONDS = 15.0


@dataclass(frozen=True)
class PoolModel:
    """What the simulator needs of one pool."""

    name: str
    role: str  # render.BASE or render.CONTROLNET
    gpus: int
    replicas: int  # at start: the Deployment's replicas, or minReplicas when autoscaled
    autoscaling: m.Autoscaling
    cache_bytes: int  # a ControlNet pool's (or, monolithic, a base pool's) ControlNet budget
    callers: tuple[str, ...] = ()


@dataclass(frozen=True)
class Fleet:
    pools: dict[str, PoolModel]
    base_pool: dict[str, str]  # workflow -> its base pool
    controlnet_pool: dict[str, str | None]  # workflow -> the pool running its ControlNets
    sync_period: float = HPA_SYNC_SECONDS


def _pool_model(plan: render.PoolPlan, cache_bytes: int) -> PoolModel:
    scaled = plan.autoscaling
    return PoolModel(plan.name, plan.role, plan.pool.gpus,
                     scaled.min_replicas if scaled.enabled else plan.pool.replicas, scaled, cache_bytes, plan.callers)


def build(workflows: Sequence[m.Workflow], *, monolithic: bool = False) -> Fleet:
    pools: dict[str, PoolModel] = {}
    shared: dict[str, list[m.Workflow]] = {}
    for wf in workflows:
        base = render.base_pool_plan(wf)
        pools[base.name] = _pool_model(base, wf.spec.controlnet_pool.cache_bytes)
        if monolithic:
            continue
        if render.has_dedicated_controlnet_pool(wf):
            plan = render.dedicated_controlnet_plan(wf)
            pools[plan.name] = _pool_model(plan, wf.spec.controlnet_pool.cache_bytes)
        elif wf.shared_pool:
            shared.setdefault(wf.shared_pool, []).append(wf)
    for name, members in shared.items():
        plan = render.shared_controlnet_plan(name, members)
        pools[plan.name] = _pool_model(plan, plan.config.controlnet.cache_bytes)
    base_pool = {wf.name: render.base_pool_name(wf.name) for wf in workflows}
    cn_pool = {wf.name: (base_pool[wf.name] if monolithic and wf.spec.controlnets else
                         None if monolithic else render.controlnet_pool_name(wf)) for wf in workflows}
    return Fleet(pools, base_pool, cn_pool)


def desired_replicas(demand: int, autoscaling: m.Autoscaling) -> int:
    """The HPA's answer for an AverageValue target: ceil(demand / target) within the bounds."""
    wanted = math.ceil(demand / autoscaling.target_in_flight_per_replica)
    return max(autoscaling.min_replicas, min(autoscaling.max_replicas, wanted))


def _with_shared_pool(wf: m.Workflow, name: str | None) -> m.Workflow:
    pool = wf.spec.controlnet_pool.model_copy(update={"shared_pool_name": name})
    return wf.model_copy(update={"spec": wf.spec.model_copy(update={"controlnet_pool": pool})})


DESIGNS = ("monolithic", "decoupled", "shared")


def design(workflows: Sequence[m.Workflow], name: str, shared_pool: str = "planner") -> Fleet:
    """(a) monolithic pods, (b) a dedicated ControlNet pool per workflow, (c) one ControlNet
    pool shared by every workflow (the operator then derives its bounds from all members)."""
    if name == "monolithic":
        return build(workflows, monolithic=True)
    if name == "decoupled":
        return build([_with_shared_pool(wf, None) for wf in workflows])
    if name == "shared":
        return build([_with_shared_pool(wf, shared_pool) for wf in workflows])
    raise ValueError(f"design: {name!r} is not one of {', '.join(DESIGNS)}")
