"""Designs (a)/(b)/(c) and the equal GPU budget, on cases worked out by hand."""
from __future__ import annotations

import pytest

from swiftdiffusion.operator import model as m
from swiftdiffusion.planner import budget, compare, fleet, report
from swiftdiffusion.planner.trace import Request
from tests.planner.helpers import PROFILE, workflow

CANNY = ("canny",)


def requests(name: str, count: int, controlnets: tuple[str, ...] = ()) -> list[Request]:
    return [Request(float(i), name, controlnets, (), 10, 64, 64) for i in range(count)]


def test_shared_lp_is_the_shared_design_with_latent_parallelism_on_even_gpus() -> None:
    wfs = [workflow("a", controlnets=CANNY), workflow("b", controlnets=("depth",), created=1,
                                                      base_pool={"gpus": 3})]
    shared, lp = fleet.design(wfs, "shared"), fleet.design(wfs, "shared-lp")
    assert sorted(lp.pools) == sorted(shared.pools) == ["swd-a-base", "swd-b-base", "swd-cn-planner"]
    assert [lp.pools[p].gpus for p in ("swd-a-base", "swd-b-base", "swd-cn-planner")] == [2, 4, 1]
    assert all(wf.spec.serving.latent_parallelism == m.LatentParallelism.ENABLED
               for wf in fleet.design_workflows(wfs, "shared-lp"))
    assert fleet.design_workflows(wfs, "applied") == wfs


def test_an_unknown_design_is_refused() -> None:
    with pytest.raises(ValueError, match="'pipelined' is not one of applied, monolithic"):
        fleet.design_workflows([workflow("a")], "pipelined")


@pytest.mark.parametrize("budget_gpus", [3, 8, 13, 40])
def test_the_budget_is_spent_and_every_pool_keeps_a_replica(budget_gpus: int) -> None:
    load, gpus = {"a": 5.0, "b": 1.0, "c": 0.0}, {"a": 1, "b": 1, "c": 1}
    replicas = budget.allocate(budget_gpus, load, gpus)
    assert sum(replicas[p] * gpus[p] for p in load) == budget_gpus
    assert min(replicas.values()) >= 1


def test_gpus_follow_offered_load() -> None:
    assert budget.allocate(14, {"a": 3.0, "b": 1.0}, {"a": 1, "b": 1}) == {"a": 10, "b": 4}
    assert budget.allocate(12, {"a": 3.0, "b": 1.0}, {"a": 1, "b": 1}) == {"a": 9, "b": 3}
    assert budget.allocate(4, {"a": 0.0, "b": 0.0}, {"a": 1, "b": 1}) == {"a": 2, "b": 2}  # no load: even


def test_two_gpu_replicas_get_half_as_many_and_an_odd_gpu_stays_unused() -> None:
    load = {"a": 1.0, "b": 1.0}
    assert budget.allocate(8, load, {"a": 1, "b": 1}) == {"a": 4, "b": 4}
    assert budget.allocate(8, load, {"a": 2, "b": 2}) == {"a": 2, "b": 2}
    assert budget.allocate(9, load, {"a": 2, "b": 2}) == {"a": 2, "b": 2}
    assert budget.allocate(9, load, {"a": 2, "b": 1}) == {"a": 2, "b": 5}  # equal load, 4 and 5 GPUs


def test_a_budget_short_of_one_replica_per_pool_is_refused() -> None:
    with pytest.raises(ValueError, match="a budget of 3 GPUs is less than one replica per pool \\(4 GPUs\\)"):
        budget.allocate(3, {"a": 1.0, "b": 1.0}, {"a": 2, "b": 2})


def test_offered_load_is_the_uncontended_service_in_gpu_seconds() -> None:
    wfs = [workflow("a", controlnets=CANNY), workflow("b", created=1, base_pool={"gpus": 2})]
    trace = requests("a", 2, CANNY) + requests("b", 1)
    plan = fleet.design(wfs, "shared")
    step = max(0.05, 0.08 + 0.01) + 0.05  # encoder || (ControlNet + transfer), then decoder
    assert budget.offered_load(plan, wfs, trace, PROFILE, monolithic=False) == pytest.approx(
        {"swd-a-base": 2 * (0.5 + 10 * step), "swd-b-base": 2 * (0.5 + 10 * 0.1), "swd-cn-planner": 2 * 10 * 0.08})
    mono = fleet.design(wfs, "monolithic")
    assert budget.offered_load(mono, wfs, trace, PROFILE, monolithic=True) == pytest.approx(
        {"swd-a-base": 2 * (0.5 + 10 * (0.1 + 0.08)), "swd-b-base": 2 * (0.5 + 10 * 0.1)})


def test_a_budgeted_design_holds_the_budget_with_fixed_replicas() -> None:
    scaled = {"autoscaling": {"enabled": True, "minReplicas": 1, "maxReplicas": 8}}
    wfs = [workflow("a", controlnets=CANNY, base_pool=scaled, controlnet_pool={"sharedPoolName": "s", **scaled}),
           workflow("b", controlnets=CANNY, created=1, base_pool=scaled)]
    trace = requests("a", 30, CANNY) + requests("b", 10, CANNY)
    trace.sort(key=lambda r: r.arrival)
    for design, expected in (("monolithic", {"swd-a-base": 6, "swd-b-base": 2}),
                             ("shared", {"swd-a-base": 4, "swd-b-base": 2, "swd-cn-planner": 2}),
                             ("shared-lp", {"swd-a-base": 2, "swd-b-base": 1, "swd-cn-planner": 2})):
        _, result = compare.simulate(wfs, trace, PROFILE, design, budget_gpus=8)
        assert {name: len(state.replicas) for name, state in result.pools.items()} == expected, design
        assert not any(state.model.autoscaling.enabled for state in result.pools.values())
        assert report.peak_gpus(result) == 8


def test_peak_gpus_counts_replicas_from_creation_while_they_start() -> None:
    scaled = {"autoscaling": {"enabled": True, "minReplicas": 1, "maxReplicas": 3, "targetInFlightPerReplica": 1}}
    wfs = [workflow("w", steps=1000, base_pool={"gpus": 2, **scaled})]
    _, result = compare.simulate(wfs, [Request(0.0, "w", (), (), 1000, 64, 64)] * 3, PROFILE, "applied")
    assert result.pools["swd-w-base"].timeline[:2] == [(0.0, 1), (15.0, 3)]  # 3 in flight at the first sync
    assert report.peak_gpus(result) == 6
