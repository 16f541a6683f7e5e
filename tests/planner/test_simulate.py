"""The fleet model against cases a planner can work out by hand."""
from __future__ import annotations

import dataclasses

import pytest

from swiftdiffusion.operator import autoscaling, render
from swiftdiffusion.planner import fleet, service
from swiftdiffusion.planner.host import SharedHost
from swiftdiffusion.planner.simulate import Simulation, SimulationError
from swiftdiffusion.planner.trace import Request
from tests.planner.helpers import PROFILE, workflow

SERVICE = 0.5 + 10 * 0.1  # fixed + 10 steps of 0.1 s: no ControlNet, no LoRA


def every(seconds: float, count: int, name: str = "w", controlnets: tuple[str, ...] = (),
          loras: tuple[str, ...] = ()) -> list[Request]:
    return [Request(i * seconds, name, controlnets, loras, 10, 64, 64) for i in range(count)]


def run(workflows, requests, *, design: str | None = None):
    plan = fleet.build(workflows) if design is None else fleet.design(workflows, design)
    return Simulation(plan, workflows, PROFILE, monolithic=design == "monolithic").run(requests)


def latencies(result) -> list[float]:
    return [o.latency for o in result.outcomes]


def test_below_capacity_every_request_takes_its_service_time() -> None:
    result = run([workflow("w")], every(2.0, 20))
    assert latencies(result) == pytest.approx([SERVICE] * 20)
    assert result.end == pytest.approx(19 * 2.0 + SERVICE)


def test_above_capacity_the_queue_grows_by_the_excess_of_each_request() -> None:
    result = run([workflow("w")], every(1.0, 20))  # 1.5 s of work per 1 s of arrivals
    assert latencies(result) == pytest.approx([SERVICE + 0.5 * i for i in range(20)])


def test_round_robin_over_two_replicas_shares_the_load() -> None:
    result = run([workflow("w", base_pool={"replicas": 2})], every(1.0, 20))
    assert latencies(result) == pytest.approx([SERVICE] * 20)
    assert result.pools["swd-w-base"].replicas[0].removed == pytest.approx(result.end)


def test_where_a_services_round_robin_starts_is_drawn_from_the_seed() -> None:
    wf = workflow("w", base_pool={"replicas": 2})
    firsts = set()
    for seed in range(8):
        sim = Simulation(fleet.build([wf]), [wf], PROFILE, seed=seed)
        pool = sim.pools["swd-w-base"]
        first = pool.next_replica(0.0)
        assert pool.next_replica(0.0) is not first  # then in turn
        firsts.add(pool.replicas.index(first))
    assert firsts == {0, 1}


def test_decoupled_controlnet_step_waits_for_the_residuals_and_the_first_call_misses() -> None:
    result = run([workflow("w", controlnets=("canny",))], every(3.0, 10, controlnets=("canny",)))
    step = max(0.05, 0.08 + 0.01) + 0.05  # encoder || (ControlNet + transfer), then decoder
    served = 0.5 + 10 * step
    assert latencies(result) == pytest.approx([served + 1.0] + [served] * 9)  # 1 s load on the first miss
    assert result.cache_hits["swd-w-cn"] == 9 and result.cache_lookups["swd-w-cn"] == 10


def test_a_miss_loads_on_its_controlnet_replica_beside_the_sessions_and_loads_already_there() -> None:
    """Two callers that miss on one ControlNet replica at once: the second's load shares that
    replica with the first's load and the first's session (processor sharing), as on a new
    replica that every base replica finds at the same moment."""
    wf = workflow("w", controlnets=("canny", "depth"), base_pool={"replicas": 2}, controlnet_pool={"replicas": 1})
    requests = [Request(0.0, "w", ("canny",), (), 10, 64, 64), Request(0.0, "w", ("depth",), (), 10, 64, 64)]
    sim = Simulation(fleet.build([wf]), [wf], PROFILE)
    first, second = latencies(sim.run(requests))
    work = service.Work(steps=10, pixels=64 * 64, controlnets=1, lora_ks=())
    share = service.controlnet_share(PROFILE, work)
    assert first == pytest.approx(service.decoupled(PROFILE, work).seconds + 1.0)  # alone on the replica
    # one load ahead of it and the first session's steps: 1 s of load at 1 / (1 + 1 + share) of the
    # device; then both sessions' steps share it
    assert second == pytest.approx(service.decoupled(PROFILE, work, 2 * share).seconds + 1.0 * (2 + share))


def test_monolithic_pods_run_controlnets_on_the_base_gpu_serially() -> None:
    result = run([workflow("w", controlnets=("canny", "depth"))], every(6.0, 3, controlnets=("canny", "depth")),
                 design="monolithic")
    served = 0.5 + 10 * (0.1 + 2 * 0.08)
    assert latencies(result) == pytest.approx([served + 2.0, served, served])  # two misses, then two hits
    assert set(result.pools) == {"swd-w-base"}


def test_bal_blocks_only_when_the_load_outlasts_k_steps() -> None:
    # Two LoRAs load back to back: ready at 0.4 s and 0.8 s; K = 5 steps is 0.5 s.
    wfs = [workflow("w", bal_k=5)]
    result = run(wfs, every(5.0, 2, loras=("a", "b")))
    blocked = 0.8 - 5 * 0.1
    assert [o.lora_blocked_seconds for o in result.outcomes] == pytest.approx([blocked, blocked])
    assert latencies(result) == pytest.approx([SERVICE + blocked + 2 * 0.05] * 2)
    relaxed = run([workflow("w", bal_k=9)], every(5.0, 2, loras=("a", "b")))
    assert [o.lora_blocked_seconds for o in relaxed.outcomes] == [0.0, 0.0]


AUTOSCALED = {"autoscaling": {"enabled": True, "minReplicas": 1, "maxReplicas": 3, "targetInFlightPerReplica": 2,
                              "scaleDownStabilizationSeconds": 60}}


def test_autoscaling_follows_demand_within_the_bounds_and_waits_for_pod_start() -> None:
    burst = [Request(i * 0.1, "w", (), (), 10, 64, 64) for i in range(40)]  # 40 requests in 4 s
    tail = [Request(200.0 + i * 10.0, "w", (), (), 10, 64, 64) for i in range(20)]  # then one per 10 s
    result = run([workflow("w", base_pool=AUTOSCALED)], burst + tail)
    timeline = result.pools["swd-w-base"].timeline
    counts = [n for _, n in timeline]
    assert min(counts) >= 1 and max(counts) == 3
    # The first poll (15 s) sees the backlog and asks for the maximum; pods serve 20 s later.
    assert timeline[1] == (15, 3)
    added = result.pools["swd-w-base"].replicas[1:3]
    assert [r.ready_at for r in added] == [35.0, 35.0]
    # Back at the floor once the window has passed with a light load.
    assert counts[-1] == 1
    down = next(t for t, n in timeline[2:] if n < 3)
    assert down >= 15 + 60  # the scale-down window: no lower recommendation counts for 60 s


def test_controlnet_pool_scales_on_its_callers_demand() -> None:
    wf = workflow("w", controlnets=("canny",), base_pool=AUTOSCALED, controlnet_pool=AUTOSCALED)
    burst = [Request(i * 0.1, "w", ("canny",), (), 10, 64, 64) for i in range(40)]
    result = run([wf], burst)
    assert result.pools["swd-w-cn"].timeline[1] == (15, 3)  # 1 open session, but its caller holds a backlog


def test_shared_pool_bounds_are_the_operators_shared_bounds() -> None:
    a = workflow("a", controlnets=("canny",), created=0, controlnet_pool={
        "sharedPoolName": "s", "autoscaling": {"enabled": True, "minReplicas": 1, "maxReplicas": 2,
                                               "targetInFlightPerReplica": 4}})
    b = workflow("b", controlnets=("depth",), created=1, controlnet_pool={
        "sharedPoolName": "s", "autoscaling": {"enabled": True, "minReplicas": 2, "maxReplicas": 3,
                                               "targetInFlightPerReplica": 2}})
    plan = fleet.build([a, b])
    pool = plan.pools[render.shared_controlnet_pool_name("s")]
    expected = autoscaling.shared_bounds([a.spec.controlnet_pool.autoscaling, b.spec.controlnet_pool.autoscaling])
    assert pool.autoscaling == expected
    assert (pool.replicas, pool.autoscaling.max_replicas) == (2, 5)
    assert pool.callers == ("swd-a-base", "swd-b-base")
    assert plan.controlnet_pool == {"a": pool.name, "b": pool.name}
    result = Simulation(plan, [a, b], PROFILE).run(every(0.2, 100, "a", ("canny",)) + [])
    assert all(2 <= n <= 5 for _, n in result.pools[pool.name].timeline)


def test_each_base_replica_takes_the_controlnet_replicas_in_turn_from_a_random_start() -> None:
    """gRPC round_robin runs in each base pod's own channel: one turn per caller, not one per
    pool, and a new random start whenever the replicas it knows change."""
    wf = workflow("w", controlnets=("canny",), base_pool={"replicas": 2}, controlnet_pool={"replicas": 3})
    starts = set()
    for seed in range(6):
        sim = Simulation(fleet.build([wf]), [wf], PROFILE, seed=seed)
        base, cn = sim.pools["swd-w-base"], sim.pools["swd-w-cn"]
        for caller in base.ready:
            picked = [cn.ready.index(cn.pick_for(caller, 0.0, sim.rng)) for _ in range(6)]
            assert picked == [(picked[0] + i) % 3 for i in range(6)]
            starts.add(picked[0])
        gone = cn.ready[0]
        sim._remove_replicas(cn, 1, 1.0)
        assert gone.draining
        for caller in base.ready:  # its connection to the replica gone closed: it resolves at once
            picked = [cn.pick_for(caller, 1.0, sim.rng) for _ in range(4)]
            assert gone not in picked and picked[0] is picked[2] is not picked[1] is picked[3]
    assert starts == {0, 1, 2}


def test_a_new_controlnet_replica_waits_for_each_caller_to_resolve_again() -> None:
    """A base pod's channel finds a pod added to its ControlNet pool only when it resolves the
    pool's name again: when one of its connections reaches the servers' age (15 s +-10%)."""
    wf = workflow("w", controlnets=("canny",), base_pool={"replicas": 2}, controlnet_pool={"replicas": 1})
    sim = Simulation(fleet.build([wf]), [wf], PROFILE)
    base, cn = sim.pools["swd-w-base"], sim.pools["swd-w-cn"]
    early, late = base.ready
    first = cn.pick_for(early, 0.0, sim.rng)
    sim._add_replicas(cn, 1, 1.0, ready_at=1.0)
    added = cn.ready[1]
    assert {cn.pick_for(early, t, sim.rng) for t in (2.0, 5.0, 10.0, 13.0)} == {first}
    assert {cn.pick_for(late, 2.0, sim.rng) for _ in range(2)} == {first, added}  # its first call: both
    assert {cn.pick_for(early, 16.6, sim.rng) for _ in range(2)} == {first, added}


def test_a_scale_down_removes_the_replica_ready_for_the_least_time_busy_or_not() -> None:
    """The ReplicaSet controller knows nothing of a pod's requests: after the unready ones it
    deletes the pod that has been ready for the least time, so a warm cache outlives a new one."""
    wf = workflow("w", base_pool={"replicas": 1})
    sim = Simulation(fleet.build([wf]), [wf], PROFILE)
    pool = sim.pools["swd-w-base"]
    oldest = pool.ready[0]
    sim._add_replicas(pool, 1, 10.0, ready_at=10.0)
    newer = pool.ready[1]
    sim._add_replicas(pool, 1, 20.0, ready_at=50.0)
    starting = pool.live[2]
    newer.busy = True
    sim._remove_replicas(pool, 1, 30.0)
    assert pool.live == [oldest, newer] and starting.draining  # unready first
    sim._remove_replicas(pool, 1, 30.0)
    assert pool.live == [oldest] and newer.draining and not oldest.draining


def test_designs_differ_only_in_where_controlnets_run() -> None:
    wfs = [workflow("a", controlnets=("canny",)), workflow("b", controlnets=("depth",), created=1)]
    assert sorted(fleet.design(wfs, "monolithic").pools) == ["swd-a-base", "swd-b-base"]
    assert sorted(fleet.design(wfs, "decoupled").pools) == ["swd-a-base", "swd-a-cn", "swd-b-base", "swd-b-cn"]
    assert sorted(fleet.design(wfs, "shared").pools) == ["swd-a-base", "swd-b-base", "swd-cn-planner"]


def test_a_busy_controlnet_replica_slows_every_session_on_it() -> None:
    w = service.Work(steps=10, pixels=64 * 64, controlnets=3, lora_ks=())
    alone, crowded = service.decoupled(PROFILE, w, 1.0), service.decoupled(PROFILE, w, 2.0)
    assert crowded.seconds - alone.seconds == pytest.approx(10 * 3 * 0.08)


def test_a_shared_host_slows_every_job_once_its_cores_are_busy() -> None:
    host = SharedHost(cores=2)
    for name in ("a", "b", "c", "d"):  # four jobs of 1 s on two cores: each runs at half speed
        host.add(0.0, 1.0, 1.0, name)
    assert host.next_finish() == pytest.approx(2.0)
    assert host.finished(2.0) == ["a", "b", "c", "d"]
    host.add(2.0, 1.0, 1.0, "e")  # alone again: full speed
    assert host.next_finish() == pytest.approx(3.0)


def test_on_a_shared_host_two_busy_replicas_of_one_core_each_take_twice_as_long() -> None:
    wfs = [workflow("w", base_pool={"replicas": 2})]
    plan = fleet.build(wfs)
    together = Simulation(plan, wfs, PROFILE, shared_cores=1).run(every(0.0, 2))
    assert latencies(together) == pytest.approx([2 * SERVICE] * 2)
    apart = Simulation(plan, wfs, PROFILE, shared_cores=2).run(every(0.0, 2))
    assert latencies(apart) == pytest.approx([SERVICE] * 2)


def test_a_request_takes_as_much_longer_as_the_hardware_was_slower_when_it_started() -> None:
    wfs = [workflow("w")]
    slower_from_ten = Simulation(fleet.build(wfs), wfs, PROFILE, slowdown=lambda t: 1.25 if t >= 10 else 1.0)
    result = slower_from_ten.run(every(5.0, 4))  # arrivals at 0, 5, 10, 15 s, each served alone
    assert latencies(result) == pytest.approx([SERVICE, SERVICE, 1.25 * SERVICE, 1.25 * SERVICE])


def test_only_a_request_started_as_the_one_before_it_ends_takes_the_queued_slowdown() -> None:
    wf = workflow("w")
    slower = PROFILE.model_copy(update={"queued_slowdown": 1.2})
    # Two at once: the second waits for the first and overlaps its end; the third finds the replica idle.
    requests = every(0.0, 2) + [Request(10.0, "w", (), (), 10, 64, 64)]
    result = Simulation(fleet.build([wf]), [wf], slower).run(requests)
    assert latencies(result) == pytest.approx([SERVICE, SERVICE + 1.2 * SERVICE, SERVICE])


def test_the_next_request_takes_the_worker_as_the_one_before_it_starts_to_decode() -> None:
    """The base server frees its worker after the loop: a queued request starts then, and the
    decode beside it takes the profile's `queued_decode_slowdown` longer; a decode with nothing
    beside it takes its own time."""
    wf = workflow("w", base_pool={"replicas": 1})
    decoding = PROFILE.model_copy(update={"decode_seconds": 0.2, "queued_decode_slowdown": 2.0,
                                          "queued_slowdown": 1.1})
    result = Simulation(fleet.build([wf]), [wf], decoding).run(every(0.0, 2))
    worker = SERVICE - 0.2
    # the first decodes from worker to worker + 0.4 beside the second, which holds the worker
    # 1.1 times as long and then decodes alone
    assert latencies(result) == pytest.approx([worker + 0.2 * 2.0, worker + 1.1 * worker + 0.2])
    assert result.pools["swd-w-base"].replicas[0].idle


def test_with_a_scrape_interval_the_hpa_scales_on_the_last_scrape_not_the_moment() -> None:
    # Scrapes at 0, 10, 20 s; syncs at 15, 30 s. A backlog arriving at 11 s is not seen by the
    # sync at 15 s (the last scrape, at 10 s, saw nothing), only by the one at 30 s.
    burst = [Request(11.0 + i * 0.1, "w", (), (), 10, 64, 64) for i in range(40)]
    wfs = [workflow("w", base_pool=AUTOSCALED)]
    instant = Simulation(fleet.build(wfs), wfs, PROFILE).run(burst)
    scraped = Simulation(dataclasses.replace(fleet.build(wfs), scrape_interval=10.0), wfs, PROFILE).run(burst)
    assert instant.pools["swd-w-base"].timeline[1] == (15, 3)
    assert scraped.pools["swd-w-base"].timeline[1] == (30, 3)
    # Scrapes at 4, 14, 24 s instead: the one at 14 s sees the backlog, the sync at 15 s acts on it.
    phased = Simulation(dataclasses.replace(fleet.build(wfs), scrape_interval=10.0), wfs, PROFILE,
                        scrape_phase=4.0).run(burst)
    assert phased.pools["swd-w-base"].timeline[1] == (15, 3)


def test_the_hpa_leaves_replicas_alone_within_its_tolerance() -> None:
    scaled = {"autoscaling": {"enabled": True, "minReplicas": 10, "maxReplicas": 20, "targetInFlightPerReplica": 1,
                              "scaleDownStabilizationSeconds": 0}}
    # 11 requests in flight at the first sync: 11 / 10 is within 10% of the target, no new replica.
    result = run([workflow("w", base_pool=scaled)], every(0.0, 11) + [Request(14.0, "w", (), (), 100, 64, 64)])
    assert [n for _, n in result.pools["swd-w-base"].timeline] == [10]


def test_a_request_for_a_pool_without_replicas_is_an_error_not_a_crash() -> None:
    with pytest.raises(SimulationError, match="swd-w-base has no replicas"):
        run([workflow("w", base_pool={"replicas": 0})], every(1.0, 1))
