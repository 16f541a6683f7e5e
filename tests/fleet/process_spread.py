"""How far one 0.2-core base service's speed strays from another's on this machine:
`python -m tests.fleet.process_spread [--services N] [--rounds R]` (about 7 minutes for 6 x 10).

The calibration's profile is one base process, the fleet's first pod another, and the canary
a third: whatever one process's step differs from another's by, running the same code in the
same kind of cgroup, is part of the run-to-run pace spread that no fleet model and no canary
can foresee (docs/calibration.md, "Where the pace spread comes from"). N local services take
turns at plain requests over R rounds, the order rotating, so the machine's drift falls on
all of them alike; each is set against the round's median service.
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REQUESTS_PER_TURN = 3
STEPS = 8
SIZE = 64


@dataclass(frozen=True)
class ProcessSpread:
    """Each service's step over the median service's, per round (rows) and service (columns)."""

    rounds: list[list[float]]

    @classmethod
    def of(cls, steps: Sequence[Sequence[float]]) -> ProcessSpread:
        """From each round's median step per service."""
        return cls([[s / statistics.median(row) for s in row] for row in steps])

    def offsets(self, rounds: slice = slice(None)) -> list[float]:
        """Each service's median over the chosen rounds."""
        chosen = self.rounds[rounds]
        return [statistics.median(row[i] for row in chosen) for i in range(len(chosen[0]))]

    def between(self) -> float:
        """Standard deviation of the services' own offsets: what a process keeps."""
        return statistics.pstdev(self.offsets())

    def within(self) -> float:
        """A service's typical standard deviation from round to round: the rounds' noise."""
        return statistics.median(statistics.pstdev(row[i] for row in self.rounds) for i in range(len(self.rounds[0])))

    def halves_agree(self) -> float:
        """Correlation of the offsets over the even rounds and over the odd ones: near 1 when a
        process keeps its speed, near 0 when the offsets are the rounds' noise."""
        return statistics.correlation(self.offsets(slice(0, None, 2)), self.offsets(slice(1, None, 2)))

    def drift(self) -> list[float]:
        """Each service's offset over the second half of the rounds less the first's."""
        half = len(self.rounds) // 2
        return [b - a for a, b in zip(self.offsets(slice(0, half)), self.offsets(slice(half, None)), strict=True)]


def measure(services: int, rounds: int) -> list[list[float]]:
    """Each round's median plain step per service, each service in cgroups of the pods' limit."""
    from swiftdiffusion.runtime.client import generate, generate_request
    from swiftdiffusion.runtime.config import Defaults
    from swiftdiffusion.runtime.serving.api import base_pb2
    from swiftdiffusion.runtime.dev.local_stack import StackOptions, local_stack
    from tests.fleet.calibration import limited_services
    from tests.runtime.fixtures import cached_model_set

    models = cached_model_set("tiny")

    def request(seed: int) -> base_pb2.GenerateRequest:
        return generate_request("a red cube", seed=seed, steps=STEPS, width=SIZE, height=SIZE, guidance_scale=5.0)

    with contextlib.ExitStack() as stack:
        targets = []
        for _ in range(services):
            options = StackOptions.on_free_ports(models, threads=1, defaults=Defaults(
                steps=STEPS, guidance_scale=5.0, width=SIZE, height=SIZE))
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            launcher = stack.enter_context(limited_services())
            targets.append(stack.enter_context(local_stack(options, folder, launcher=launcher)).base.target)
        for target in targets:
            generate(target, request(0), timeout=300)  # a first request is not the process's speed
        out = []
        for r in range(rounds):
            order = [(i + r) % services for i in range(services)]
            if r % 2:
                order.reverse()
            steps: list[list[float]] = [[] for _ in targets]
            for k in range(REQUESTS_PER_TURN):
                for i in order:
                    steps[i].append(generate(targets[i], request(10 + k), timeout=300).timings["denoise"] / STEPS)
            out.append([statistics.median(s) for s in steps])
            print(f"round {r}: " + ", ".join(f"{s:.4f}" for s in out[-1]), flush=True)
        return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--services", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args(argv)
    spread = ProcessSpread.of(measure(args.services, args.rounds))
    print("each service against the round's median: " + ", ".join(f"{o - 1:+.1%}" for o in spread.offsets()))
    print(f"between services: standard deviation {spread.between():.3f}; a service from round to round: "
          f"{spread.within():.3f}; even rounds against odd ones: correlation {spread.halves_agree():.2f}")
    print("second half against the first: " + ", ".join(f"{d:+.1%}" for d in spread.drift()))


if __name__ == "__main__":
    main()
