"""BAL against diffusers' per-request LoRA loading, mid model on CPU, side by side in one process.

  no LoRA                   the runtime's engine, base weights only: BAL's bound
  BAL                       the runtime's engine with BAL: the LoRA loads in the background
                            while the first steps run, merged as soon as ready (no later than
                            step K), the base weights restored after
  diffusers, no LoRA        diffusers' own pipeline call on its own copy of the model: the
                            strongest baseline (what diffusers costs with no LoRA at all)
  diffusers, LoRA request   per request: load_lora_weights + fuse_lora, diffusers' pipeline
                            call, unfuse_lora + unload_lora_weights (what a diffusers server
                            does per LoRA request)

Each request is timed end to end (text encoding, denoising, VAE decode), wall time and this
process's CPU time (CPU time is the steadier figure on a loaded machine). The LoRAs are
random, rank 64 over the mid UNet's attention, feed-forward and projection layers (the
realistic size for this model), read from disk on every request by both sides (BAL's host
cache is off: LoRA popularity is flat). BAL's ratio to no LoRA is printed beside its bound,
1.00x (BAL can only add work), goal <= 1.05x.

Method (bench/harness.py): one untimed warm-up request per set-up, identical to the timed
ones, then interleaved rounds; medians with min-max spread, ratios of medians with the
per-round range.

    .venv/bin/python bench/bal_bench.py                                  # 256 px, 8 steps
    .venv/bin/python bench/bal_bench.py --size 512 --steps 30            # for the record (add --loras 2)
"""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import harness
import torch

from swiftdiffusion.runtime import metric_names as names
from swiftdiffusion.runtime.dev.synthetic_lora import lora_for_model_set
from swiftdiffusion.runtime.lora.bal import BalHookFactory
from swiftdiffusion.runtime.lora.formats import bind_lora
from swiftdiffusion.runtime.lora.merge import WeightPatch
from swiftdiffusion.runtime.lora.store import LoraEntry, LoraStore
from swiftdiffusion.runtime.pipeline.base_model import BaseModel
from swiftdiffusion.runtime.pipeline.engine import BaseEngine
from swiftdiffusion.runtime.pipeline.requests import GenerateParams
from swiftdiffusion.runtime.pipeline.step_hooks import LoraUse

SCALE = 0.8
GOAL = 1.05
NO_LORA, BAL = "no LoRA", "BAL"
DIFFUSERS_NO_LORA, DIFFUSERS_LORA = "diffusers, no LoRA", "diffusers, LoRA request"


def wall_and_cpu(run: Callable[[], object]) -> harness.Measurement:
    """Wall seconds, and CPU seconds of this process (all threads): on a loaded machine the
    CPU time still says how much work a set-up does."""
    cpu = time.process_time()
    wall = harness.timed(run)
    return {"wall": wall, "cpu": time.process_time() - cpu}


def diffusers_call(pipeline, params: GenerateParams) -> None:  # noqa: ANN001 (a diffusers pipeline)
    pipeline(
        prompt=params.prompt, num_inference_steps=params.steps, guidance_scale=params.guidance_scale,
        width=params.width, height=params.height, generator=torch.Generator().manual_seed(params.seed),
    )


def diffusers_request(pipeline, files: list[Path], params: GenerateParams) -> None:  # noqa: ANN001
    """One LoRA request the way diffusers serves it: load, fuse, generate, unfuse, unload."""
    adapters = [f"lora{i}" for i in range(len(files))]
    for adapter, path in zip(adapters, files, strict=True):
        pipeline.load_lora_weights(str(path), adapter_name=adapter)
    pipeline.set_adapters(adapters, adapter_weights=[SCALE] * len(adapters))
    pipeline.fuse_lora(adapter_names=adapters)
    diffusers_call(pipeline, params)
    pipeline.unfuse_lora()
    pipeline.unload_lora_weights()


def merge_and_restore_seconds(model: BaseModel, files: list[Path]) -> tuple[float, float]:
    """The part of BAL's cost that no background thread can hide: merging, then restoring."""
    components = {"unet": model.unet}
    deltas = [bind_lora(path.read_bytes(), components) for path in files]
    patch = WeightPatch()
    merge = harness.timed(lambda: [patch.merge(d, SCALE) for d in deltas])
    return merge, harness.timed(patch.restore)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--loras", type=int, default=1, choices=(1, 2))
    parser.add_argument("--rank", type=int, default=64)
    parser.add_argument("--k", type=int, help="BAL bound (default: a fifth of the steps, as the paper's 10 of 50)")
    parser.add_argument("--threads", type=int, default=2)
    harness.add_arguments(parser)
    args = parser.parse_args()
    harness.check_arguments(parser, args)
    torch.set_num_threads(args.threads)
    root = harness.model_set("mid")
    files = [lora_for_model_set(root, f"bench-r{args.rank}-{i}", rank=args.rank, seed=i) for i in range(args.loras)]
    k = args.k if args.k is not None else max(1, args.steps // 5)
    model = BaseModel.load(root / "base", dtype="float32", device="cpu")
    store = LoraStore([LoraEntry(path.stem, str(path), SCALE, k) for path in files])
    text_encoders = {"text_encoder": model.pipeline.text_encoder, "text_encoder_2": model.pipeline.text_encoder_2}
    factory = BalHookFactory(store, text_encoders, default_k=k)
    engine = BaseEngine(model, step_hooks=factory)
    reference = BaseModel.load(root / "base", dtype="float32", device="cpu").pipeline  # diffusers' own copy
    base = GenerateParams(prompt="a lighthouse on a cliff at dawn", seed=3, steps=args.steps, guidance_scale=5.0,
                          width=args.size, height=args.size)
    with_loras = GenerateParams(**{**base.__dict__, "loras": tuple(LoraUse(path.stem) for path in files)})
    megabytes = sum(path.stat().st_size for path in files) / 1e6
    start = harness.header(f"mid model, {args.size}x{args.size}, {args.steps} steps, {args.threads} threads, "
                           f"{args.loras} LoRA(s) of rank {args.rank} ({megabytes:.0f} MB), K={k}; per request; "
                           f"{args.repeats} interleaved rounds after one warm-up each")
    setups = {
        NO_LORA: lambda: wall_and_cpu(lambda: engine.generate(base)),
        BAL: lambda: wall_and_cpu(lambda: engine.generate(with_loras)),
        DIFFUSERS_NO_LORA: lambda: wall_and_cpu(lambda: diffusers_call(reference, base)),
        DIFFUSERS_LORA: lambda: wall_and_cpu(lambda: diffusers_request(reference, files, base)),
    }
    runs = harness.interleave(setups, args.repeats)
    results = report(runs)
    results["bal"] = bal_details(store, model, files)
    factory.close()
    harness.write_json(args.json, "bal", {"size": args.size, "steps": args.steps, "repeats": args.repeats,
                                          "loras": args.loras, "rank": args.rank, "k": k, "threads": args.threads,
                                          "megabytes": megabytes, "quick": args.quick}, start, results)
    return 0


RATIOS = (  # (numerator, denominator, what it says, bound)
    (BAL, NO_LORA, f"BAL / no LoRA (goal <= {GOAL}x)", 1.0),
    (BAL, DIFFUSERS_LORA, "BAL / diffusers' LoRA request", None),
    (BAL, DIFFUSERS_NO_LORA, "BAL / diffusers, no LoRA (strongest baseline)", None),
    (DIFFUSERS_LORA, DIFFUSERS_NO_LORA, "diffusers' own LoRA overhead", None),
    (NO_LORA, DIFFUSERS_NO_LORA, "our engine / diffusers, both without LoRA", None),
)


def report(runs: dict[str, list[harness.Measurement]]) -> dict[str, Any]:
    """Prints each set-up's wall and CPU time and the ratios; returns them for --json."""
    spreads = {name: {key: harness.spread(harness.column(values, key)) for key in ("wall", "cpu")}
               for name, values in runs.items()}
    for name, values in spreads.items():
        print(f"  {name:24s} wall {values['wall'].text()}   cpu {values['cpu'].text()}")
    ratios: dict[str, Any] = {}
    for numerator, denominator, label, bound in RATIOS:
        pair = {key: harness.ratio(harness.column(runs[numerator], key), harness.column(runs[denominator], key))
                for key in ("wall", "cpu")}
        print(f"  {label:46s} wall {pair['wall'].text(bound, digits=3)}; cpu {pair['cpu'].text(bound, digits=3)}")
        ratios[f"{numerator} / {denominator}"] = {key: value.as_json(bound) for key, value in pair.items()}
    return {"setups": {name: {key: value.as_json() for key, value in values.items()}
                       for name, values in spreads.items()}, "ratios": ratios}


def bal_details(store: LoraStore, model: BaseModel, files: list[Path]) -> dict[str, float]:
    """BAL's own metrics over all its requests (the warm-up included), and its merge and restore timed apart."""
    def sample(name: str) -> float:
        return store.metrics.registry.get_sample_value(name, {"role": "base"}) or 0.0

    merges = sample(names.LORA_MERGE_STEP + "_count") or 1.0
    details = {
        "mean_merge_step": sample(names.LORA_MERGE_STEP + "_sum") / merges,
        "blocked_steps": sample(names.LORA_BLOCKED_STEPS_TOTAL),
        "blocked_seconds": sample(names.LORA_BLOCKED_SECONDS_TOTAL),
        "load_seconds_per_lora": sample(names.LORA_LOAD_SECONDS + "_sum")
        / (sample(names.LORA_LOAD_SECONDS + "_count") or 1.0),
        "merges": merges,
    }
    details["merge_seconds"], details["restore_seconds"] = merge_and_restore_seconds(model, files)
    print(f"  BAL over {merges:.0f} LoRA merges: mean merge step {details['mean_merge_step']:.1f}, blocked "
          f"{details['blocked_steps']:.0f} times for {details['blocked_seconds']:.2f} s in all, load "
          f"{details['load_seconds_per_lora']:.2f} s per LoRA (in the background)")
    print(f"  BAL's own work on the denoising thread, measured apart: merge {details['merge_seconds']:.2f} s, "
          f"restore {details['restore_seconds']:.2f} s")
    return details


if __name__ == "__main__":
    sys.exit(main())
