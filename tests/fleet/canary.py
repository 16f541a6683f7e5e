"""A speed canary for the CPU fleet: `python -m tests.fleet.canary <model set> <interval>`
times one pod-sized piece of work (a denoising step and a decode at 64 px: the base server's
warm-up) every `interval` seconds and prints `[wall clock, seconds]` lines.

Run in a cgroup with the pods' CPU limit, it reads the speed a pod gets from this machine at
each moment. That speed drifts: the same step takes up to 25% longer from one minute to the
next on this VM, with other pods starting or not (docs/calibration.md). A fleet
model cannot know that; the calibration hands the simulator the measured speed, so that what
it checks is the model of the fleet.
"""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
import threading
import time
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.testbed.fleet import cpu

WINDOW_SECONDS = 5.0  # readings within this of a moment make its speed (their median)


@dataclass
class Readings:
    """The canary's readings so far: (wall clock, seconds), in time order."""

    moments: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    def add(self, moment: float, seconds: float) -> None:
        self.moments.append(moment)
        self.seconds.append(seconds)

    def median(self, start: float, end: float) -> float | None:
        """The median reading between two wall-clock moments (None without one)."""
        chosen = self.seconds[bisect_left(self.moments, start):bisect_right(self.moments, end)]
        return statistics.median(chosen) if chosen else None

    def reading_at(self, steps: Sequence[tuple[tuple[float, float], float]]) -> float | None:
        """The reading that a step measured at moments of this machine's drifting speed stands for:
        `steps` are (wall-clock span, seconds) and each is set against the readings within
        WINDOW_SECONDS of its middle, as the simulator reads the speed at a fleet's request; the
        steps' median over the median of those ratios (None without a reading near any)."""
        ratios = []
        for (start, end), seconds in steps:
            middle = (start + end) / 2
            if reading := self.median(middle - WINDOW_SECONDS, middle + WINDOW_SECONDS):
                ratios.append(seconds / reading)
        return statistics.median(s for _, s in steps) / statistics.median(ratios) if ratios else None

    def slowdown(self, baseline: float, origin: float) -> Callable[[float], float]:
        """Seconds since `origin` -> how much slower than `baseline` the canary ran then (the
        median of its readings within WINDOW_SECONDS; 1 where it has none)."""
        def at(t: float) -> float:
            moment = origin + t
            value = self.median(moment - WINDOW_SECONDS, moment + WINDOW_SECONDS)
            return 1.0 if value is None else value / baseline
        return at


@contextmanager
def canary(model_set: Path, cores: float, interval: float = 1.0) -> Iterator[Readings]:
    """The canary running in a cgroup of `cores`, its readings collected as they come."""
    procs = cpu.create(f"canary-{time.monotonic_ns()}", cores)
    readings = Readings()
    process = subprocess.Popen(cpu.joining(procs, [sys.executable, "-m", "tests.fleet.canary", str(model_set),
                                                   str(interval)]), stdout=subprocess.PIPE, text=True)

    def read() -> None:
        for line in process.stdout:
            readings.add(*json.loads(line))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        yield readings
    finally:
        process.kill()
        process.wait()
        reader.join(timeout=5)
        cpu.remove(procs)


def main(model_set: Path, interval: float) -> None:
    import torch

    from swiftdiffusion.runtime.pipeline.base_model import BaseModel
    from swiftdiffusion.runtime.pipeline.engine import BaseEngine
    from swiftdiffusion.runtime.serving.process import keep_freed_memory

    torch.set_num_threads(1)  # as a pod with a fraction of a core runs
    keep_freed_memory()  # and as it allocates
    engine = BaseEngine(BaseModel.load(str(model_set / "base"), None, "float32", str(model_set), "cpu"))
    engine.warm_up(guidance_scale=5.0)  # the first call's set-up is not the machine's speed
    while True:
        moment, started = time.time(), time.perf_counter()
        engine.warm_up(guidance_scale=5.0)
        print(json.dumps([moment, time.perf_counter() - started]), flush=True)
        time.sleep(max(0.0, interval - (time.perf_counter() - started)))


if __name__ == "__main__":
    main(Path(sys.argv[1]), float(sys.argv[2]))
