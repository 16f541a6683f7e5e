"""How far the pipelined ControlNet mode drifts from the exact (synchronous) output.

Pipelined mode lets step t use the residuals computed for step t-1, hiding transfer on
slow links. This runs both modes in one process on the tiny model set and prints the
deviation of the decoded image (max abs pixel difference in 0-255, PSNR) and of the final
latents (cosine similarity). Nothing here is timed: the outputs are deterministic, so the
harness's warm-up and rounds do not apply; only its --json output does.

    .venv/bin/python bench/controlnet_pipelined_deviation.py [--size 128] [--steps 20] [--json FILE]
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import harness
import numpy as np
import torch
from diffusers import ControlNetModel

from swiftdiffusion.runtime.config import ControlNetMode
from swiftdiffusion.runtime.controlnet.cache import ControlNetCache
from swiftdiffusion.runtime.controlnet.control_image import encode_png
from swiftdiffusion.runtime.controlnet.engine import ControlNetEngine
from swiftdiffusion.runtime.dev.demo import demo_control_image
from swiftdiffusion.runtime.pipeline.base_model import BaseModel
from swiftdiffusion.runtime.pipeline.engine import BaseEngine
from swiftdiffusion.runtime.pipeline.requests import GenerateParams
from swiftdiffusion.runtime.serving.metrics import RuntimeMetrics
from swiftdiffusion.runtime.transport.inprocess import InProcessResidualSource
from swiftdiffusion.runtime.transport.residual_source import ControlNetUse

NAMES = harness.CONTROLNET_NAMES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 20, 30])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the results to FILE")
    args = parser.parse_args()
    start = harness.machine()
    torch.set_num_threads(1)
    models = harness.model_set("tiny")
    model = BaseModel.load(models / "base", device="cpu")
    cache = ControlNetCache(
        NAMES, lambda n: ControlNetModel.from_pretrained(models / "controlnets" / n), 1 << 30, RuntimeMetrics("controlnet")
    )
    source = InProcessResidualSource(ControlNetEngine(cache, torch.device("cpu"), torch.float32))
    engines = {mode: BaseEngine(model, source, mode=mode) for mode in ControlNetMode}
    image = encode_png(demo_control_image(args.size))
    print(f"tiny model, {args.size}x{args.size}, guidance 5, conditioning scale 1.0, {args.seeds} seeds each")
    print(f"{'CNs':>3} {'steps':>5} {'max |px diff|':>14} {'mean |px diff|':>15} {'PSNR dB':>8} {'latent cos':>11}")
    rows = []
    for count in (1, 3):
        for steps in args.steps:
            worst, means, psnrs, cosines = 0.0, [], [], []
            for seed in range(args.seeds):
                params = GenerateParams(
                    "a house", seed=seed, steps=steps, guidance_scale=5.0, width=args.size, height=args.size,
                    controlnets=tuple(ControlNetUse(NAMES[i], image, 1.0) for i in range(count)),
                )
                exact = engines[ControlNetMode.SYNCHRONOUS].generate(params)
                piped = engines[ControlNetMode.PIPELINED].generate(params)
                diff = np.abs(exact.image * 255 - piped.image * 255)
                worst = max(worst, float(diff.max()))
                means.append(float(diff.mean()))
                mse = float(((exact.image - piped.image) ** 2).mean())
                psnrs.append(10 * math.log10(1 / mse) if mse else math.inf)
                cosines.append(float(torch.nn.functional.cosine_similarity(
                    exact.latents.flatten(), piped.latents.flatten(), dim=0)))
            print(f"{count:>3} {steps:>5} {worst:>14.1f} {np.mean(means):>15.2f} {np.mean(psnrs):>8.1f} {np.mean(cosines):>11.4f}")
            rows.append({"controlnets": count, "steps": steps, "max_abs_pixel_diff": worst,
                         "mean_abs_pixel_diff": float(np.mean(means)), "psnr_db": float(np.mean(psnrs)),
                         "latent_cosine": float(np.mean(cosines))})
    harness.write_json(args.json, "controlnet_pipelined_deviation",
                       {"size": args.size, "steps": args.steps, "seeds": args.seeds}, start, {"rows": rows})


if __name__ == "__main__":
    main()
