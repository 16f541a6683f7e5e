"""One measuring discipline for every benchmark in bench/, so no set-up is favoured by method.

- Every set-up gets one untimed warm-up run, identical to its timed runs, before any
  timed run: no set-up pays for cold caches, lazy loading or first-call allocation alone.
- Timed runs are interleaved across set-ups (A B C A B C ...), at least three rounds, so a
  drift in machine load falls on all set-ups alike instead of on whichever ran last.
- Set-ups that need their own pinned processes run in long-lived `Worker`s that take one
  "run once" command at a time, so they too can be interleaved round by round.
- Each set-up is reported as its median with the spread (min-max and the relative
  spread); each ratio is the ratio of medians with the range of the per-round ratios
  (the runs of one round are neighbours in time), printed beside the bound it is
  measured against.
- `--json FILE` writes the same numbers for the docs.

Pure Python: the benchmarks import torch themselves, in the processes that need it.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from swiftdiffusion.runtime.dev.model_factory import ModelSize

REPO = Path(__file__).resolve().parents[1]
MIN_REPEATS = 3
QUIET_LOAD = 0.5  # one-minute load average above which a run is not one for the record
CONTROLNET_NAMES = ("canny", "depth", "pose")

Measurement = dict[str, float]
"""Named values of one timed run: always "wall", its wall-clock result in seconds (per request or per
step, as the bench says), then whatever else the set-up reports."""
Run = Callable[[], Measurement]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags every benchmark shares."""
    parser.add_argument("--repeats", type=int, default=MIN_REPEATS,
                        help=f"timed rounds, interleaved across set-ups (at least {MIN_REPEATS})")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: allows fewer than {MIN_REPEATS} rounds; not for the record")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the results to FILE")


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse too few rounds: with two a median is just a mean, and one says nothing of spread."""
    if args.repeats < 1 or (args.repeats < MIN_REPEATS and not args.quick):
        parser.error(f"--repeats must be at least {MIN_REPEATS} (pass --quick for a smoke run)")


def model_set(size: ModelSize) -> Path:
    """The offline-built model set under .models/<size> (built once, then reused by every bench)."""
    from swiftdiffusion.runtime.dev.model_factory import build_model_set

    return build_model_set(REPO / ".models" / size, size, CONTROLNET_NAMES)


def timed(run: Callable[[], object]) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def interleave(setups: Mapping[str, Run], repeats: int) -> dict[str, list[Measurement]]:
    """Warm every set-up once (untimed), then run the rounds A B C A B C ...; returns the runs per set-up."""
    for name, run in setups.items():
        started = time.perf_counter()
        run()
        log(f"warm-up {name}: {time.perf_counter() - started:.1f} s")
    runs: dict[str, list[Measurement]] = {name: [] for name in setups}
    for index in range(repeats):
        for name, run in setups.items():
            runs[name].append(run())
        log(f"round {index + 1}/{repeats}: " + ", ".join(f"{name} {runs[name][-1]['wall']:.2f} s" for name in setups))
    return runs


def column(runs: Sequence[Measurement], key: str = "wall") -> list[float]:
    return [run[key] for run in runs]


@dataclass(frozen=True)
class Spread:
    """The timed values of one quantity, in round order."""

    samples: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def low(self) -> float:
        return min(self.samples)

    @property
    def high(self) -> float:
        return max(self.samples)

    @property
    def relative(self) -> float:
        """(max - min) / median: how far apart the runs were, as a fraction of the result."""
        return (self.high - self.low) / self.median if self.median else 0.0

    def text(self, unit: str = "s", digits: int = 2) -> str:
        return (f"{self.median:.{digits}f}{' ' + unit if unit else ''} [{self.low:.{digits}f}-{self.high:.{digits}f}, "
                f"spread {100 * self.relative:.1f}%]")

    def as_json(self) -> dict[str, Any]:
        return {"median": self.median, "min": self.low, "max": self.high, "relative_spread": self.relative,
                "samples": list(self.samples)}


def spread(samples: Sequence[float]) -> Spread:
    return Spread(tuple(samples))


@dataclass(frozen=True)
class Ratio:
    """numerator / denominator of medians; `rounds` holds the same ratio round by round."""

    value: float
    rounds: Spread

    def text(self, bound: float | None = None, digits: int = 2) -> str:
        """"ratio X.XXx [per-round range] of bound Y.YYx (Z% of bound)"."""
        out = f"ratio {self.value:.{digits}f}x [rounds {self.rounds.low:.{digits}f}-{self.rounds.high:.{digits}f}]"
        if bound is not None:
            out += f" of bound {bound:.{digits}f}x ({100 * self.value / bound:.{max(0, digits - 2)}f}% of bound)"
        return out

    def as_json(self, bound: float | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"ratio": self.value, "rounds": self.rounds.as_json()}
        if bound is not None:
            out |= {"bound": bound, "fraction_of_bound": self.value / bound}
        return out


def ratio(numerator: Sequence[float], denominator: Sequence[float]) -> Ratio:
    """A ratio of two set-ups' values; the per-round ratios pair runs of the same round."""
    rounds = spread([a / b for a, b in zip(numerator, denominator, strict=True)])
    return Ratio(statistics.median(numerator) / statistics.median(denominator), rounds)


def machine() -> dict[str, Any]:
    """What a reader needs to judge the numbers: cores, load, versions."""
    versions = {}
    for package in ("torch", "diffusers", "transformers"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return {"cpus": sorted(os.sched_getaffinity(0)), "load_average": os.getloadavg(),
            "python": platform.python_version(), **versions}


def header(description: str, method: str = "median of the timed rounds, [min-max, spread = (max-min)/median]"
           ) -> dict[str, Any]:
    """Prints the run's conditions (load average first: numbers are only as quiet as the machine)."""
    info = machine()
    print(description)
    print(f"cores {info['cpus']}, load average {' '.join(f'{x:.2f}' for x in info['load_average'])} at start; "
          f"{method}")
    if info["load_average"][0] > QUIET_LOAD:
        print(f"warning: load average above {QUIET_LOAD}: other jobs share these cores; not numbers for the record")
    return info


def write_json(path: Path | None, bench: str, config: Mapping[str, Any], start: Mapping[str, Any],
               results: Mapping[str, Any]) -> None:
    """The machine-readable copy of what was printed, with the load average at start and end."""
    if path is None:
        return
    report = {"bench": bench, "command": shlex.join(sys.argv), "config": dict(config),
              "machine": {**start, "load_average_at_end": os.getloadavg()}, "results": dict(results)}
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")


def log(message: str) -> None:
    print(f"  . {message}", file=sys.stderr, flush=True)


class Worker:
    """A long-lived child process that runs its set-up once per command.

    One JSON line per command on its stdin, one JSON line per reply on its stdout (see
    `serve`). The process, with its pinning and its loaded models, lives across rounds,
    so pinned set-ups can be interleaved like in-process ones.
    """

    def __init__(self, name: str, argv: Sequence[str]) -> None:
        self.name = name
        self.process = subprocess.Popen(list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                        cwd=REPO)

    def call(self, **command: Any) -> Measurement:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.name!r} exited ({self.process.wait()}); its stderr is above")
        return json.loads(line)

    def close(self) -> None:
        """End of stdin ends the worker's loop; a worker that does not stop is killed."""
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@contextmanager
def workers(specs: Mapping[str, Sequence[str]]) -> Iterator[dict[str, Worker]]:
    """Starts the named workers together (they load in parallel) and closes them all after."""
    started: dict[str, Worker] = {}
    try:
        for name, argv in specs.items():
            started[name] = Worker(name, argv)
        yield started
    finally:
        for worker in started.values():
            worker.close()


def serve(handle: Callable[[dict[str, Any]], Measurement]) -> int:
    """The worker's side of `Worker`: answer each command line with one JSON line.

    The protocol keeps its own copy of stdout; file descriptor 1 goes to stderr, so
    nothing a library prints can corrupt a reply.
    """
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    for line in sys.stdin:
        replies.write(json.dumps(handle(json.loads(line))) + "\n")
        replies.flush()
    return 0
