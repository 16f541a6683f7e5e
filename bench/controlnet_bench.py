"""Decoupled ControlNet vs diffusers, one CPU core per "device" (the paper compares GPUs so).

Runs side by side, in one invocation, on the mid-size SDXL-architecture model set:
  1. diffusers' StableDiffusionXLControlNetPipeline on one core (ControlNets run
     sequentially with the UNet), for 1 and 3 ControlNets;
  2. our decoupled path: the base server pinned to core 0 and the ControlNet service
     pinned to core 1, talking gRPC over loopback (synchronous, exact mode);
  3. for honesty, diffusers given both cores (two torch threads);
and prints latencies, the speedup ratios and the ideal per-step bound
(CN + UNet) / (max(encoder + mid, CN') + decoder) from the same run's component times,
where CN is diffusers' ControlNet step and CN' ours (the control image embedded once per
request instead of every step).

    .venv/bin/python bench/controlnet_bench.py                  # full: 256 px, 10 steps
    .venv/bin/python bench/controlnet_bench.py --steps 3 --repeats 1   # quick check
Each measurement runs in its own pinned process (os.sched_setaffinity, torch threads).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODELS = Path(".models/mid")
NAMES = ("canny", "depth", "pose")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--controlnets", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--models", type=Path, default=MODELS)
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per measurement; the minimum is kept")
    parser.add_argument("--worker", choices=("diffusers", "components"), help=argparse.SUPPRESS)
    parser.add_argument("--cpus", type=str, default="0", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return _worker(args)
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        print("needs at least two CPUs", file=sys.stderr)
        return 2
    from swiftdiffusion.runtime.dev.model_factory import build_model_set

    started = time.perf_counter()
    build_model_set(args.models, "mid", NAMES)
    print(f"mid model set ready in {time.perf_counter() - started:.0f} s: {args.models}")
    print(f"{args.size}x{args.size}, {args.steps} steps, CFG (batch 2), fp32, cores {cpus[0]} and {cpus[1]}")
    print("note: numbers are only as quiet as the machine; rerun on an idle one for the record\n")
    rows = []
    for count in args.controlnets:
        one_core = _run_worker("diffusers", args, count, [cpus[0]])
        two_cores = _run_worker("diffusers", args, count, cpus[:2])
        parts = _run_worker("components", args, count, [cpus[0]])
        ours, phases = _decoupled(args, count, cpus[0], cpus[1])
        cn, ours_cn, enc, dec = parts["controlnet"], parts["controlnet_cached"], parts["encoder"], parts["decoder"]
        bound = (cn + enc + dec) / (max(enc, ours_cn) + dec)
        rows.append((count, one_core["seconds"], two_cores["seconds"], ours, bound, parts))
        print(f"{count} CN done: decoupled phases " + ", ".join(f"{k} {v:.2f}s" for k, v in phases.items()), flush=True)
    print(f"{'CNs':>3} {'diffusers 1 core':>17} {'diffusers 2 cores':>18} {'decoupled 1+1':>14} "
          f"{'speedup vs 1 core':>18} {'vs 2 cores':>11} {'ideal bound':>12}")
    for count, one, two, ours, bound, _ in rows:
        print(f"{count:>3} {one:>16.2f}s {two:>17.2f}s {ours:>13.2f}s {one / ours:>17.2f}x {two / ours:>10.2f}x {bound:>11.2f}x")
    print("\nper step (1 core, batch 2), seconds: ControlNet(s) diffusers / ours (image embedded once) / "
          "UNet encoder+mid / UNet decoder")
    for count, *_, parts in rows:
        print(f"  {count} CN: {parts['controlnet']:.3f} / {parts['controlnet_cached']:.3f} / "
              f"{parts['encoder']:.3f} / {parts['decoder']:.3f}")
    return 0


def _run_worker(kind: str, args: argparse.Namespace, count: int, cpus: list[int]) -> dict:
    command = [
        sys.executable, __file__, "--worker", kind, "--cpus", ",".join(map(str, cpus)),
        "--size", str(args.size), "--steps", str(args.steps), "--controlnets", str(count), "--models", str(args.models),
        "--repeats", str(args.repeats),
    ]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def _decoupled(args: argparse.Namespace, count: int, base_cpu: int, controlnet_cpu: int) -> tuple[float, dict]:
    """Best wall time of a Generate through the real base and ControlNet services, pinned."""
    from swiftdiffusion.runtime.client import generate, generate_request
    from swiftdiffusion.runtime.config import Defaults
    from swiftdiffusion.runtime.controlnet.control_image import encode_png
    from swiftdiffusion.runtime.dev.local_stack import StackOptions, local_stack

    options = StackOptions.on_free_ports(
        args.models, threads=1, base_cpus=[base_cpu], controlnet_cpus=[controlnet_cpu],
        defaults=Defaults(steps=args.steps, guidance_scale=5.0, width=args.size, height=args.size),
    )
    uses = [(NAMES[i], encode_png(_control_image(args.size, i)), 0.5) for i in range(count)]
    with tempfile.TemporaryDirectory() as folder, local_stack(options, Path(folder), timeout=600) as stack:
        generate(stack.base.target, generate_request("warm-up", steps=1, controlnets=uses))  # loads the ControlNets
        best, phases = float("inf"), {}
        for _ in range(args.repeats):
            started = time.perf_counter()
            reply = generate(stack.base.target, generate_request("a house on a hill", seed=1, controlnets=uses))
            if time.perf_counter() - started < best:
                best, phases = time.perf_counter() - started, reply.timings
        return best, phases


def _control_image(size: int, variant: int):
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (size, size))
    draw = ImageDraw.Draw(image)
    inset = size // (4 + variant)
    draw.rectangle([inset, inset, size - inset, size - inset // 2], outline="white", width=2)
    return image


def _worker(args: argparse.Namespace) -> int:
    cpus = [int(c) for c in args.cpus.split(",")]
    os.sched_setaffinity(0, set(cpus))
    import torch

    torch.set_num_threads(len(cpus))
    from diffusers import ControlNetModel, StableDiffusionXLControlNetPipeline

    count = args.controlnets[0]
    nets = [ControlNetModel.from_pretrained(args.models / "controlnets" / NAMES[i]) for i in range(count)]
    pipe = StableDiffusionXLControlNetPipeline.from_pretrained(
        args.models / "base", controlnet=nets if count > 1 else nets[0], local_files_only=True
    )
    pipe.set_progress_bar_config(disable=True)
    images = [_control_image(args.size, i) for i in range(count)]
    call = dict(
        prompt="a house on a hill", image=images if count > 1 else images[0], width=args.size, height=args.size,
        guidance_scale=5.0, controlnet_conditioning_scale=[0.5] * count if count > 1 else 0.5, output_type="np",
    )
    if args.worker == "diffusers":
        pipe(**call, num_inference_steps=1, generator=torch.Generator().manual_seed(0))  # warm-up
        best = float("inf")
        for _ in range(args.repeats):
            started = time.perf_counter()
            pipe(**call, num_inference_steps=args.steps, generator=torch.Generator().manual_seed(1))
            best = min(best, time.perf_counter() - started)
        print(json.dumps({"seconds": best}))
    else:
        print(json.dumps(_components(pipe, nets, images, args.size)))
    return 0


def _components(pipe, nets, images, size: int, repeats: int = 3) -> dict:
    """Median per-step times of the ControlNets, the UNet encoder+mid and the decoder (batch 2)."""
    import statistics

    import torch

    from swiftdiffusion.runtime.controlnet.control_image import preprocess_control_image
    from swiftdiffusion.runtime.controlnet.forward import controlnet_residuals, embed_control_image
    from swiftdiffusion.runtime.pipeline.base_model import BaseModel
    from swiftdiffusion.runtime.pipeline.unet_split import unet_decode, unet_encode

    model = BaseModel(pipe)
    text = model.encode_text("a house on a hill", None, 5.0, size, size)
    start = model.start(10, size, size, 0, torch.float32)
    t = start.timesteps[3]
    x = start.scheduler.scale_model_input(torch.cat([start.latents] * 2), t)
    conds = [preprocess_control_image(i, 2, torch.device("cpu"), torch.float32) for i in images]

    def controlnets():
        for net, cond in zip(nets, conds):
            net(x, t, encoder_hidden_states=text.prompt_embeds, controlnet_cond=cond, conditioning_scale=0.5,
                added_cond_kwargs=text.added_cond_kwargs, return_dict=False)

    embeddings = [embed_control_image(net, cond) for net, cond in zip(nets, conds)]

    def controlnets_cached():
        for net, embedding in zip(nets, embeddings):
            controlnet_residuals(net, x, t, text, embedding, 0.5)

    encoded = unet_encode(model.unet, x, t, text)
    timings: dict[str, list[float]] = {"controlnet": [], "controlnet_cached": [], "encoder": [], "decoder": []}
    with torch.no_grad():
        for _ in range(repeats):
            for name, fn in (("controlnet", controlnets), ("controlnet_cached", controlnets_cached),
                             ("encoder", lambda: unet_encode(model.unet, x, t, text)),
                             ("decoder", lambda: unet_decode(model.unet, encoded, None))):
                began = time.perf_counter()
                fn()
                timings[name].append(time.perf_counter() - began)
    return {name: statistics.median(values) for name, values in timings.items()}


if __name__ == "__main__":
    sys.exit(main())
