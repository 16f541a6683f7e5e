"""Latent parallelism on CPU, each core standing in for one GPU, every set-up in its own pinned process.

  one-core batched     batched CFG (batch of 2) on the first core: the one-GPU baseline
  one-core in turn     the same process computing the two branches one after the other,
                       each as a batch of one: the same arithmetic as two workers (bit for
                       bit, so the same trajectory), alone on one core
  two workers          latent parallelism: leader on the first core, follower on the second
  two-thread batched   batched CFG with two torch threads in one process on both cores:
                       the strongest single-process baseline

Each value is the denoising loop's wall time per step (text encoding and VAE excluded),
and the CPU time of the process(es) on the critical path over the whole request (text
encoding included, no VAE decode) divided by the steps. Ratios (goals: >= 1.8x over
one core, >= 1.0x over the two-thread process) are printed beside the contention-free bound

    bound = T1 / (Ts / 2 + X)

T1 the one-core batched step, Ts the one-core in-turn step (so Ts / 2 is one branch, with
half the scheduler step), X the branch exchange's cost per step (the step command with the
latent out, a prediction of that size back, measured by a ping-pong of those messages
between the two cores): two workers that neither slow down nor speed up each other each
compute one branch in Ts / 2 and then swap one message pair. The often-quoted T1 / (T1/2 + X) assumes
a batch of one costs half a batch of two; the in-turn set-up measures what it does cost,
on the same latents, and the output says how far apart the two are. A ratio above the
bound means the workers sped each other up: on the 2-core development VM a UNet running on
one core made the same UNet on the other core 6-10% faster (measured apart, cause unknown).

Method (bench/harness.py): the three processes stay alive; every set-up gets one untimed
warm-up run identical to its timed ones, then the rounds run interleaved.

    .venv/bin/python bench/cfg_bench.py                                  # 256 px, 3 steps
    .venv/bin/python bench/cfg_bench.py --size 512 --steps 10            # for the record, quiet machine
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
from pathlib import Path
from typing import Any

import harness
import torch

from swiftdiffusion.runtime.cfg import LatentParallel, ModelRef, StepLayout, WorkerSpec
from swiftdiffusion.runtime.cfg.exchange import BranchExchange, BranchReply, StepCommand
from swiftdiffusion.runtime.cfg.worker import COND, UNCOND, pin
from swiftdiffusion.runtime.pipeline.base_model import BaseModel
from swiftdiffusion.runtime.pipeline.conditioning import TextConditioning
from swiftdiffusion.runtime.pipeline.engine import BaseEngine
from swiftdiffusion.runtime.pipeline.guidance import AwaitResiduals, combine_cfg
from swiftdiffusion.runtime.pipeline.requests import GenerateParams
from swiftdiffusion.runtime.pipeline.step_hooks import without_loras
from swiftdiffusion.runtime.pipeline.unet_split import predict_noise

SCRIPT = Path(__file__).resolve()
PROMPT = "a lighthouse on a cliff at dusk"
GUIDANCE = 5.0
ONE_CORE, IN_TURN = "one-core batched", "one-core in turn"
TWO_WORKERS, TWO_THREADS = "two workers", "two-thread batched"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256, help="image width and height")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--exchange", choices=("pipe", "torch"), default="pipe")
    harness.add_arguments(parser)
    parser.add_argument("--worker", choices=("batched", "two-workers"), help=argparse.SUPPRESS)
    parser.add_argument("--cpus", type=str, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    harness.check_arguments(parser, args)
    cpus = sorted(os.sched_getaffinity(0))[:2]
    if len(cpus) < 2:
        sys.exit("needs two cores")
    harness.model_set("mid")
    start = harness.header(f"mid model, {args.size}x{args.size}, {args.steps} steps, guidance {GUIDANCE}, "
                           f"{args.exchange} exchange; per denoising step; {args.repeats} interleaved rounds "
                           "after one warm-up each")
    specs = {ONE_CORE: worker_argv(args, "batched", cpus[:1]), TWO_WORKERS: worker_argv(args, "two-workers", cpus),
             TWO_THREADS: worker_argv(args, "batched", cpus)}
    with harness.workers(specs) as running:
        setups = {
            ONE_CORE: lambda: running[ONE_CORE].call(predictor="batched"),
            IN_TURN: lambda: running[ONE_CORE].call(predictor="in turn"),
            TWO_WORKERS: lambda: running[TWO_WORKERS].call(),
            TWO_THREADS: lambda: running[TWO_THREADS].call(predictor="batched"),
        }
        runs = harness.interleave(setups, args.repeats)
        exchange = {kind: running[TWO_WORKERS].call(exchange=kind)["wall"] for kind in ("pipe", "torch")}
    results = report(runs, exchange, args.exchange)
    harness.write_json(args.json, "cfg", {"size": args.size, "steps": args.steps, "repeats": args.repeats,
                                          "exchange": args.exchange, "quick": args.quick}, start, results)
    return 0


def report(runs: dict[str, list[harness.Measurement]], exchange: dict[str, float], used: str) -> dict[str, Any]:
    """Prints per-step times, the ratios beside the contention-free bound, and the exchange costs."""
    walls = {name: harness.spread(harness.column(values)) for name, values in runs.items()}
    cpus = {name: harness.spread(harness.column(values, "cpu")) for name, values in runs.items()}
    for name in runs:
        print(f"  {name:20s} {walls[name].text(digits=3)} wall   cpu/step (whole request) {cpus[name].text(digits=3)}")
    leader, follower = (harness.spread(harness.column(runs[TWO_WORKERS], key))
                        for key in ("cpu_leader", "cpu_follower"))
    print(f"  {'':20s} two workers' cpu: leader {leader.median:.3f} s, follower {follower.median:.3f} s per step")
    one_core, one_branch = walls[ONE_CORE].median, walls[IN_TURN].median / 2
    bound = one_core / (one_branch + exchange[used])
    wall = {name: harness.column(values) for name, values in runs.items()}
    over_one_core = harness.ratio(wall[ONE_CORE], wall[TWO_WORKERS])
    over_two_threads = harness.ratio(wall[TWO_THREADS], wall[TWO_WORKERS])
    cpu_ratio = harness.ratio(harness.column(runs[ONE_CORE], "cpu"), harness.column(runs[TWO_WORKERS], "cpu"))
    print(f"contention-free bound T1 / (Ts / 2 + X) = {one_core:.3f} / ({one_branch:.3f} + {exchange[used]:.6f}) "
          f"= {bound:.2f}x")
    print(f"  (a batch of one costs {100 * one_branch / (one_core / 2):.0f}% of half a batch of two here; "
          f"T1 / (T1/2 + X) would be {one_core / (one_core / 2 + exchange[used]):.2f}x)")
    print(f"two workers over one-core batched:   {over_one_core.text(bound)}   (goal >= 1.8x)")
    print(f"two workers over two-thread batched: {over_two_threads.text()}   (goal >= 1.0x; strongest baseline)")
    # On a loaded machine wall time measures the other jobs too; CPU time of the critical path does not.
    print(f"one-core CPU / two workers' critical-path CPU: {cpu_ratio.text(bound)}")
    for kind, cost in exchange.items():
        print(f"exchange per step ({kind:5s}): {cost * 1e6:7.1f} us = {100 * cost / walls[TWO_WORKERS].median:.3f}% "
              "of a two-worker step")
    return {
        "setups": {name: {"wall_per_step": walls[name].as_json(), "cpu_per_step": cpus[name].as_json()}
                   for name in runs},
        "two_workers_cpu_per_step": {"leader": leader.as_json(), "follower": follower.as_json()},
        "exchange_seconds_per_step": exchange,
        "bound": {"value": bound, "formula": "T1 / (Ts / 2 + X)", "T1": one_core, "Ts": 2 * one_branch,
                  "X": exchange[used]},
        "ratios": {"over_one_core": over_one_core.as_json(bound), "over_two_threads": over_two_threads.as_json(),
                   "cpu_over_one_core": cpu_ratio.as_json(bound)},
    }


def worker_argv(args: argparse.Namespace, kind: str, cpus: list[int]) -> list[str]:
    return [sys.executable, str(SCRIPT), "--worker", kind, "--cpus", ",".join(map(str, cpus)),
            "--size", str(args.size), "--steps", str(args.steps), "--exchange", args.exchange]


def worker(args: argparse.Namespace) -> int:
    """A pinned process: batched CFG on its cores, or the leader of two workers (follower on the next core)."""
    cpus = tuple(int(c) for c in args.cpus.split(","))
    root = harness.model_set("mid")
    if args.worker == "batched":
        pin(cpus, len(cpus))
        model = BaseModel.load(root / "base", device="cpu")
        engines = {"batched": BaseEngine(model), "in turn": BaseEngine(model, predictor=InTurnCfg(model.unet))}
        return harness.serve(lambda command: per_step(engines[command["predictor"]], request(args), (os.getpid(),)))
    pin(cpus[:1], 1)
    model = BaseModel.load(root / "base", device="cpu")
    parallel = LatentParallel(model.unet, WorkerSpec(ModelRef(str(root / "base")), cores=cpus[1:],
                                                     exchange=args.exchange))
    parallel.start()
    try:
        engine = BaseEngine(model, predictor=parallel.predictor, step_hooks=parallel.step_hooks(without_loras))
        assert parallel.pair.follower_pid is not None
        pids = (os.getpid(), parallel.pair.follower_pid)
        latent = args.size // model.pipeline.vae_scale_factor
        layout = StepLayout((1, model.unet.config.in_channels, latent, latent), model.dtype, torch.float32)

        def handle(command: dict[str, Any]) -> harness.Measurement:
            if "exchange" in command:
                return {"wall": exchange_seconds_per_step(command["exchange"], layout, cpus[-1])}
            return per_step(engine, request(args), pids)

        return harness.serve(handle)
    finally:
        parallel.close()


def request(args: argparse.Namespace) -> GenerateParams:
    return GenerateParams(PROMPT, 3, args.steps, GUIDANCE, args.size, args.size)


class InTurnCfg:
    """NoisePredictor: each branch as its own batch of one, one after the other, on this core.

    The same arithmetic as the two workers (the tests hold them bit for bit equal), so the
    latents, and with them the kernels' speed, follow the same trajectory.
    """

    def __init__(self, unet: torch.nn.Module) -> None:
        self.unet = unet

    @torch.no_grad()
    def predict(self, model_input: torch.Tensor, timestep: torch.Tensor, text: TextConditioning,
                residuals: AwaitResiduals | None) -> torch.Tensor:
        assert residuals is None, "this bench runs no ControlNet"
        uncond, cond = (predict_noise(self.unet, model_input, timestep, text.branch(i), None) for i in (UNCOND, COND))
        return combine_cfg(uncond, cond, text.guidance_scale)

    def close(self) -> None:
        """Nothing to release: the UNet belongs to the base model."""


def per_step(engine: BaseEngine, params: GenerateParams, pids: tuple[int, ...]) -> harness.Measurement:
    """Denoising wall time per step, and each process's CPU time over the request per step (the leader first)."""
    before = [cpu_seconds(pid) for pid in pids]
    wall = engine.generate(params, decode=False).timings["denoise"] / params.steps
    cpu = [(cpu_seconds(pid) - b) / params.steps for pid, b in zip(pids, before, strict=True)]
    out = {"wall": wall, "cpu": max(cpu)}
    if len(cpu) == 2:
        out |= {"cpu_leader": cpu[0], "cpu_follower": cpu[1]}
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _echo(kind: str, endpoint: object, layout: StepLayout, core: int) -> None:
    pin((core,), 1)
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


def exchange_seconds_per_step(kind: str, layout: StepLayout, echo_core: int, rounds: int = 300) -> float:
    """One step's traffic from this process to an echo on `echo_core`: the latent out, a prediction back."""
    from swiftdiffusion.runtime.cfg.dist_exchange import leader_store

    context = multiprocessing.get_context("spawn")
    if kind == "pipe":
        mine, theirs = context.Pipe()
        child_endpoint, leader_endpoint = theirs, mine
    else:
        store = leader_store()
        child_endpoint, leader_endpoint = ("127.0.0.1", store.port), store
    process = context.Process(target=_echo, args=(kind, child_endpoint, layout, echo_core), daemon=True)
    process.start()
    exchange = _exchange(kind, leader_endpoint, leader=True)
    exchange.prepare(layout)
    latent = torch.randn(layout.latent_shape, dtype=layout.latent_dtype)
    timestep = torch.tensor(999.0, dtype=layout.timestep_dtype)
    for index in range(rounds + 20):
        if index == 20:  # the first messages warm the connection
            started = time.perf_counter()
        exchange.send_step(StepCommand(index, timestep, latent, 0))
        exchange.recv_reply()
    elapsed = time.perf_counter() - started
    exchange.send_step(StepCommand(-1))
    process.join(30)
    return elapsed / rounds


if __name__ == "__main__":
    sys.exit(main())
