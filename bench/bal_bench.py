"""BAL against diffusers' per-request LoRA loading, mid model on CPU, side by side in one run.

  no LoRA     the runtime's engine, base weights only
  diffusers   per request: load_lora_weights + fuse_lora, diffusers' pipeline call,
              unfuse_lora + unload_lora_weights (what a diffusers server does per LoRA request)
              (and diffusers' pipeline call alone, for its own LoRA overhead)
  BAL         the runtime's engine with BAL: the LoRA loads in the background while the
              first steps run, merged as soon as ready (no later than step K), restored after

Each request is timed end to end (text encoding, denoising, VAE decode). The LoRAs are
random, rank 64 over the mid UNet's attention, feed-forward and projection layers (the
realistic size for this model), read cold from disk by BAL (no host cache: LoRA
popularity is flat). Prints median wall latency and process CPU time with their ratios
(CPU time is the steadier figure on a loaded machine); goals: BAL within 10% of no LoRA,
well below diffusers.

Reduced run (proves it works):  .venv/bin/python bench/bal_bench.py
Full run (quiet machine):       .venv/bin/python bench/bal_bench.py --size 512 --steps 30 --repeats 3
Two LoRAs per request:          add --loras 2
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from swiftdiffusion.runtime import metric_names as names  # noqa: E402
from swiftdiffusion.runtime.dev.synthetic_lora import lora_for_model_set  # noqa: E402
from swiftdiffusion.runtime.lora.bal import BalHookFactory  # noqa: E402
from swiftdiffusion.runtime.lora.formats import bind_lora  # noqa: E402
from swiftdiffusion.runtime.lora.merge import WeightPatch  # noqa: E402
from swiftdiffusion.runtime.lora.store import LoraEntry, LoraStore  # noqa: E402
from swiftdiffusion.runtime.pipeline.base_model import BaseModel  # noqa: E402
from swiftdiffusion.runtime.pipeline.engine import BaseEngine  # noqa: E402
from swiftdiffusion.runtime.pipeline.requests import GenerateParams  # noqa: E402
from swiftdiffusion.runtime.pipeline.step_hooks import LoraUse  # noqa: E402

SCALE = 0.8


def timed(run) -> float:  # noqa: ANN001 (a no-argument callable)
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def wall_and_cpu(run) -> tuple[float, float]:  # noqa: ANN001
    """Wall seconds, and CPU seconds of this process (all threads): on a loaded machine the
    CPU time still says how much work a set-up does."""
    cpu = time.process_time()
    return timed(run), time.process_time() - cpu


def diffusers_call(pipeline, params: GenerateParams) -> None:
    pipeline(
        prompt=params.prompt, num_inference_steps=params.steps, guidance_scale=params.guidance_scale,
        width=params.width, height=params.height, generator=torch.Generator().manual_seed(params.seed),
    )


def diffusers_request(pipeline, files: list[Path], params: GenerateParams) -> None:
    """One LoRA request the way diffusers serves it: load, fuse, generate, unfuse, unload."""
    names = [f"lora{i}" for i in range(len(files))]
    for name, path in zip(names, files):
        pipeline.load_lora_weights(str(path), adapter_name=name)
    pipeline.set_adapters(names, adapter_weights=[SCALE] * len(names))
    pipeline.fuse_lora(adapter_names=names)
    diffusers_call(pipeline, params)
    pipeline.unfuse_lora()
    pipeline.unload_lora_weights()


def merge_and_restore_seconds(model: BaseModel, files: list[Path]) -> tuple[float, float]:
    """The part of BAL's cost that no background thread can hide: merging, then restoring."""
    components = {"unet": model.unet}
    deltas = [bind_lora(path.read_bytes(), components) for path in files]
    patch = WeightPatch()
    merge = timed(lambda: [patch.merge(d, SCALE) for d in deltas])
    return merge, timed(patch.restore)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--loras", type=int, default=1, choices=(1, 2))
    parser.add_argument("--rank", type=int, default=64)
    parser.add_argument("--k", type=int, help="BAL bound (default: a fifth of the steps, as the paper's 10 of 50)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from tests.runtime.fixtures import cached_model_set

    root = cached_model_set("mid")
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
    setups = {
        "no LoRA": lambda: engine.generate(base),
        "diffusers": lambda: diffusers_request(reference, files, base),
        "diffusers, no LoRA": lambda: diffusers_call(reference, base),
        "BAL": lambda: engine.generate(with_loras),
    }
    megabytes = sum(path.stat().st_size for path in files) / 1e6
    print(f"mid model, {args.size}x{args.size}, {args.steps} steps, {args.threads} threads, "
          f"{args.loras} LoRA(s) of rank {args.rank} ({megabytes:.0f} MB), K={k}, median of {args.repeats}")
    engine.generate(GenerateParams(**{**base.__dict__, "steps": 1}))  # warm-up
    latencies: dict[str, list[tuple[float, float]]] = {name: [] for name in setups}
    for _ in range(args.repeats):
        for name, run in setups.items():  # interleaved, so machine load drifts hit all alike
            latencies[name].append(wall_and_cpu(run))
    wall = {name: statistics.median(w for w, _ in values) for name, values in latencies.items()}
    cpu = {name: statistics.median(c for _, c in values) for name, values in latencies.items()}
    print(f"  {'':18s} {'wall':>9s} {'ratio':>7s} {'CPU':>9s} {'ratio':>7s}   (ratios to no LoRA)")
    for name in setups:
        print(f"  {name:18s} {wall[name]:8.2f}s {wall[name] / wall['no LoRA']:6.3f}x {cpu[name]:8.2f}s {cpu[name] / cpu['no LoRA']:6.3f}x")
    print(f"  BAL / diffusers: wall {wall['BAL'] / wall['diffusers']:.3f}, CPU {cpu['BAL'] / cpu['diffusers']:.3f}; "
          f"diffusers' own LoRA overhead: wall {wall['diffusers'] / wall['diffusers, no LoRA']:.3f}x, "
          f"CPU {cpu['diffusers'] / cpu['diffusers, no LoRA']:.3f}x")
    sample = lambda name: store.metrics.registry.get_sample_value(name, {"role": "base"}) or 0.0  # noqa: E731
    bal_runs = args.repeats * args.loras
    print(f"  BAL: mean merge step {sample(names.LORA_MERGE_STEP + '_sum') / bal_runs:.1f}, "
          f"blocked {sample(names.LORA_BLOCKED_STEPS_TOTAL):.0f} times for {sample(names.LORA_BLOCKED_SECONDS_TOTAL):.2f} s in all, "
          f"load {sample(names.LORA_LOAD_SECONDS + '_sum') / bal_runs:.2f} s per LoRA (in the background)")
    merge, restore = merge_and_restore_seconds(model, files)
    print(f"  BAL's own work on the denoising thread, measured apart: merge {merge:.2f} s, restore {restore:.2f} s")
    factory.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
