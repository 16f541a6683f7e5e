"""Replicas sharing one host's cores: processor sharing in virtual time.

Every job (a request being served, a pod starting) has a number of seconds of work at full
speed and a CPU intensity (cores it keeps busy at full speed). While the summed intensity
exceeds the cores, every job runs at cores / intensity of its speed. Virtual time advances
at that rate, so a job finishes when virtual time reaches its start plus its work, and only
the earliest finish needs an event: O(log n) per job, whatever the sharing.
"""
from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field

EPSILON = 1e-9


@dataclass
class SharedHost:
    cores: float
    virtual: float = 0.0
    clock: float = 0.0
    intensity: float = 0.0
    jobs: list[tuple[float, int, float, object]] = field(default_factory=list)
    _seq: itertools.count = field(default_factory=itertools.count)

    def __post_init__(self) -> None:
        if self.cores <= 0:
            raise ValueError(f"shared cores must be positive, not {self.cores}")

    def rate(self) -> float:
        """The share of its own speed every job runs at now."""
        return min(1.0, self.cores / self.intensity) if self.intensity > 0 else 1.0

    def _advance(self, now: float) -> None:
        self.virtual += (now - self.clock) * self.rate()
        self.clock = now

    def add(self, now: float, work: float, intensity: float, job: object) -> None:
        self._advance(now)
        heapq.heappush(self.jobs, (self.virtual + work, next(self._seq), intensity, job))
        self.intensity += intensity

    def finished(self, now: float) -> list[object]:
        """The jobs done by `now`, removed."""
        self._advance(now)
        done = []
        while self.jobs and self.jobs[0][0] <= self.virtual + EPSILON:
            _, _, intensity, job = heapq.heappop(self.jobs)
            self.intensity = max(0.0, self.intensity - intensity)
            done.append(job)
        return done

    def next_finish(self) -> float | None:
        """When the earliest job finishes if nothing else starts or ends first."""
        if not self.jobs:
            return None
        return self.clock + max(0.0, self.jobs[0][0] - self.virtual) / self.rate()
