"""Latent parallelism on CPU, each core standing in for one GPU, all three set-ups in one run.

  one-core batched    batched CFG (batch of 2) on one core: the one-GPU baseline
  two workers         latent parallelism: leader on core 0, follower on core 1
  two-thread batched  batched CFG with two threads in one process on both cores

Prints per-step latency of each, the ratios (goals: >= 1.8x over one core, no slower than
the two-thread process), and the branch exchange's per-step cost (latent out, prediction
back) for the socket-pair and the gloo exchange, measured by a ping-pong of the same sizes.

Reduced run (proves it works, a few minutes):  .venv/bin/python bench/cfg_bench.py
Full run (quiet machine):                      .venv/bin/python bench/cfg_bench.py --size 512 --steps 10 --repeats 3
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from swiftdiffusion.runtime.cfg import LatentParallel, ModelRef, StepLayout, WorkerSpec  # noqa: E402
from swiftdiffusion.runtime.cfg.exchange import BranchExchange, BranchReply, StepCommand  # noqa: E402
from swiftdiffusion.runtime.cfg.worker import pin  # noqa: E402
from swiftdiffusion.runtime.pipeline.base_model import BaseModel  # noqa: E402
from swiftdiffusion.runtime.pipeline.engine import BaseEngine  # noqa: E402
from swiftdiffusion.runtime.pipeline.requests import GenerateParams  # noqa: E402
from swiftdiffusion.runtime.pipeline.step_hooks import without_loras  # noqa: E402


@dataclass(frozen=True)
class Timing:
    """Wall seconds per step, and CPU seconds per step of each process (critical path first)."""

    wall: float
    cpu: tuple[float, ...]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def per_step(engine: BaseEngine, params: GenerateParams, repeats: int, pids: tuple[int, ...]) -> Timing:
    """Median denoising time per step (text encoding and VAE excluded), after one warm-up."""
    engine.generate(GenerateParams(**{**params.__dict__, "steps": 1}), decode=False)
    walls, cpus = [], []
    for _ in range(repeats):
        before = [cpu_seconds(pid) for pid in pids]
        walls.append(engine.generate(params, decode=False).timings["denoise"] / params.steps)
        cpus.append([(cpu_seconds(pid) - b) / params.steps for pid, b in zip(pids, before)])
    return Timing(statistics.median(walls), tuple(statistics.median(c) for c in zip(*cpus)))


def batched(model: BaseModel, params: GenerateParams, cores: set[int], repeats: int) -> Timing:
    os.sched_setaffinity(0, cores)
    torch.set_num_threads(len(cores))
    return per_step(BaseEngine(model), params, repeats, (os.getpid(),))


def two_workers(model: BaseModel, root: Path, params: GenerateParams, repeats: int, exchange: str) -> Timing:
    pin((0,), 1)
    parallel = LatentParallel(model.unet, WorkerSpec(ModelRef(str(root / "base")), cores=(1,), exchange=exchange))
    parallel.start()
    try:
        engine = BaseEngine(model, predictor=parallel.predictor, step_hooks=parallel.step_hooks(without_loras))
        follower = parallel.pair.follower_pid
        assert follower is not None
        return per_step(engine, params, repeats, (os.getpid(), follower))
    finally:
        parallel.close()


def _echo(kind: str, endpoint: object, layout: StepLayout) -> None:
    pin((1,), 1)
    exchange = _exchange(kind, endpoint, leader=False)
    exchange.prepare(layout)
    while not (command := exchange.recv_step()).is_end:
        exchange.send_reply(BranchReply(command.latent))


def _exchange(kind: str, endpoint: object, leader: bool) -> BranchExchange:
    if kind == "pipe":
        from swiftdiffusion.runtime.cfg.pipe_exchange import PipeExchange

        return PipeExchange(endpoint)  # type: ignore[arg-type]
    from swiftdiffusion.runtime.cfg.dist_exchange import FOLLOWER, LEADER, TorchDistributedExchange, follower_store

    if leader:
        return TorchDistributedExchange(endpoint, LEADER)  # type: ignore[arg-type]
    host, port = endpoint  # type: ignore[misc]
    return TorchDistributedExchange(follower_store(host, port), FOLLOWER)


def exchange_seconds_per_step(kind: str, layout: StepLayout, rounds: int = 300) -> float:
    """One step's traffic: a step command with the latent out, a prediction of that size back."""
    from swiftdiffusion.runtime.cfg.dist_exchange import leader_store

    pin((0,), 1)
    context = multiprocessing.get_context("spawn")
    if kind == "pipe":
        mine, theirs = context.Pipe()
        child_endpoint, leader_endpoint = theirs, mine
    else:
        store = leader_store()
        child_endpoint, leader_endpoint = ("127.0.0.1", store.port), store
    process = context.Process(target=_echo, args=(kind, child_endpoint, layout), daemon=True)
    process.start()
    exchange = _exchange(kind, leader_endpoint, leader=True)
    exchange.prepare(layout)
    latent = torch.randn(layout.latent_shape, dtype=layout.latent_dtype)
    timestep = torch.tensor(999.0, dtype=layout.timestep_dtype)
    for index in range(rounds + 20):
        if index == 20:
            started = time.perf_counter()
        exchange.send_step(StepCommand(index, timestep, latent, 0))
        exchange.recv_reply()
    elapsed = time.perf_counter() - started
    exchange.send_step(StepCommand(-1))
    process.join(30)
    return elapsed / rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256, help="image width and height")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--exchange", choices=("pipe", "torch"), default="pipe")
    args = parser.parse_args()
    if len(os.sched_getaffinity(0)) < 2:
        sys.exit("needs two cores")

    from tests.runtime.fixtures import cached_model_set

    root = cached_model_set("mid")
    torch.set_num_threads(1)
    model = BaseModel.load(root / "base", device="cpu")
    params = GenerateParams("a lighthouse on a cliff at dusk", 3, args.steps, 5.0, args.size, args.size)
    print(f"mid model, {args.size}x{args.size}, {args.steps} steps, median of {args.repeats}; per step:")
    one_core = batched(model, params, {0}, args.repeats)
    print(f"  one-core batched    {one_core.wall:.3f} s wall   cpu {one_core.cpu[0]:.3f} s")
    split = two_workers(model, root, params, args.repeats, args.exchange)
    leader, follower = split.cpu
    print(f"  two workers         {split.wall:.3f} s wall   cpu leader {leader:.3f} s, follower {follower:.3f} s ({args.exchange})")
    two_threads = batched(model, params, {0, 1}, args.repeats)
    print(f"  two-thread batched  {two_threads.wall:.3f} s wall   cpu {two_threads.cpu[0]:.3f} s (both threads)")
    print(f"speed-up over one core:           {one_core.wall / split.wall:.2f}x   (goal >= 1.8x)")
    print(f"speed-up over two-thread process: {two_threads.wall / split.wall:.2f}x   (goal >= 1.0x)")
    # On a loaded machine wall time measures the other jobs; CPU time of the critical path does not.
    print(f"one-core CPU / two-worker critical-path CPU: {one_core.cpu[0] / max(split.cpu):.2f}x (contention-free bound)")
    latent = params.height // model.pipeline.vae_scale_factor
    layout = StepLayout((1, model.unet.config.in_channels, latent, latent), model.dtype, torch.float32)
    for kind in ("pipe", "torch"):
        cost = exchange_seconds_per_step(kind, layout)
        print(f"exchange per step ({kind:5s}): {cost * 1e6:7.1f} us  = {100 * cost / split.wall:.3f}% of a two-worker step")


if __name__ == "__main__":
    main()
