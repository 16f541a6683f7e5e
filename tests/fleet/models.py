"""Models of the fleet with one part wrong, by a margin that would mislead a plan: what a
calibration should refuse. The recorded runs refuse each (`test_recorded_calibration.py`);
`power.py` asks how often one live run would (docs/calibration.md, "What a calibration can tell").
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from swiftdiffusion.planner.fleet import Fleet, PoolModel
from swiftdiffusion.planner.profile import Profile
from swiftdiffusion.planner.simulate import Result
from tests.fleet.recording import Recording


@dataclass(frozen=True)
class Model:
    """Ours, or ours with the service's speed, the profile or the operator's pools changed."""

    speed: float = 1.0  # every request's service time times this, on top of the measured slowdown
    profile: Callable[[Profile], Profile] | None = None  # None: the profile as measured
    plan: Callable[[Fleet], Fleet] | None = None  # None: the operator's pools

    def slowdown(self, measured: Callable[[float], float] | None) -> Callable[[float], float]:
        return lambda t: self.speed * (1.0 if measured is None else measured(t))

    def profile_of(self, measured: Profile) -> Profile:
        return self.profile(measured) if self.profile else measured

    def plan_of(self, operators: Fleet) -> Fleet:
        return self.plan(operators) if self.plan else operators

    def simulate(self, recorded: Recording) -> list[Result]:
        return recorded.simulate(self.slowdown(recorded.slowdown()), profile=self.profile_of(recorded.profile),
                                 plan=self.plan_of(recorded.plan))


def _scaled(**factors: float) -> Callable[[Profile], Profile]:
    return lambda p: p.model_copy(update={name: getattr(p, name) * factor for name, factor in factors.items()})


def _pools(change: Callable[[PoolModel], PoolModel]) -> Callable[[Fleet], Fleet]:
    return lambda f: dataclasses.replace(f, pools={name: change(pool) for name, pool in f.pools.items()})


OURS = Model()
# Smaller errors in the speed and the pod start are within the test bed's noise (the docs' table).
WRONG_MODELS = {
    "service 20% slower": Model(speed=1.2),
    "service 20% faster": Model(speed=0.8),
    "pod start doubled": Model(profile=_scaled(pod_start_seconds=2.0)),
    "pod start halved": Model(profile=_scaled(pod_start_seconds=0.5)),
    "no slowdown in a queue": Model(profile=lambda p: p.model_copy(
        update={"queued_slowdown": 1.0, "queued_decode_slowdown": 1.0})),
    "ControlNet loads free": Model(profile=_scaled(controlnet_load_seconds=0.0)),
    "ControlNet loads 3x": Model(profile=_scaled(controlnet_load_seconds=3.0)),
    "cache holds both ControlNets": Model(plan=_pools(lambda p: dataclasses.replace(p, cache_bytes=2 * p.cache_bytes))),
    "HPA syncing every 15 s": Model(plan=lambda f: dataclasses.replace(f, sync_period=15.0)),
    "no scale-down stabilization": Model(plan=_pools(lambda p: dataclasses.replace(
        p, autoscaling=p.autoscaling.model_copy(update={"scale_down_stabilization_seconds": 0})))),
}
