"""The pools a set of workflows makes, decided by the operator's own render functions.

A design is a rewrite of the workflows (what a user would `kubectl apply` instead), so the
pools, bounds and GPUs of every design come from the same render. `monolithic` is the
diffusers-style baseline the paper compares with: no ControlNet pool, every base replica
runs its workflow's ControlNets itself, serially, with its own cache.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

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
    # Prometheus's scrape interval for the runtime pods: the HPA sees the in-flight gauges as
    # of the last scrape (the chart's ServiceMonitor scrapes every 30 s). None: as of the sync.
    scrape_interval: float | None = None


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


def with_spec(wf: m.Workflow, **sections: dict[str, Any]) -> m.Workflow:
    """`wf` with some fields of some spec sections replaced, e.g. `serving={"bal_default_k": 5}`."""
    spec = wf.spec.model_copy(update={name: getattr(wf.spec, name).model_copy(update=fields)
                                      for name, fields in sections.items()})
    return wf.model_copy(update={"spec": spec})


def _with_latent_parallelism(wf: m.Workflow) -> m.Workflow:
    """Latent parallelism on, with the even GPU count the CRD then requires (one GPU per CFG
    branch): an odd `basePool.gpus` rounds up, so a one-GPU pod becomes a two-GPU pod."""
    gpus = wf.spec.base_pool.gpus
    return with_spec(wf, serving={"latent_parallelism": m.LatentParallelism.ENABLED},
                     base_pool={"gpus": gpus + gpus % 2})


APPLIED, MONOLITHIC = "applied", "monolithic"
DESIGNS = (APPLIED, MONOLITHIC, "decoupled", "shared", "shared-lp")
COMPARED = (MONOLITHIC, "shared", "shared-lp")  # the (a), (b) and (c)


def design_workflows(workflows: Sequence[m.Workflow], name: str, shared_pool: str = "planner") -> list[m.Workflow]:
    """The workflows as design `name` would have them: `applied` as written; `monolithic` as
    written (`build` then keeps ControlNets on the base pods); `decoupled`, a dedicated
    ControlNet pool each; `shared`, one ControlNet pool for every workflow (the operator then
    derives its bounds from all members); `shared-lp`, that with latent parallelism on every
    workflow."""
    if name in (APPLIED, MONOLITHIC):
        return list(workflows)
    if name == "decoupled":
        return [with_spec(wf, controlnet_pool={"shared_pool_name": None}) for wf in workflows]
    if name in ("shared", "shared-lp"):
        shared = [with_spec(wf, controlnet_pool={"shared_pool_name": shared_pool}) for wf in workflows]
        return shared if name == "shared" else [_with_latent_parallelism(wf) for wf in shared]
    raise ValueError(f"design: {name!r} is not one of {', '.join(DESIGNS)}")


def design(workflows: Sequence[m.Workflow], name: str, shared_pool: str = "planner") -> Fleet:
    """The fleet of design `name` (see `design_workflows`)."""
    return build(design_workflows(workflows, name, shared_pool), monolithic=name == MONOLITHIC)
