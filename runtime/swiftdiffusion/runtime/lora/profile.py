"""Profile BAL's bound K for a (base model, LoRA) pair.

Runs the base model with and without the LoRA (merged before the first step) from the
same seed and records, after every step, the cosine similarity of the two latents. K is
the first step at which it falls below the threshold (0.99): until then the LoRA has
barely changed the result, so BAL may run those steps without it. The result goes to
the LoRA's sidecar `<lora>.profile.json`, where the store looks it up.

    python -m swiftdiffusion.runtime.lora.profile --model MODEL --lora FILE [--steps 30]
    swiftdiffusion profile-lora --model MODEL --lora FILE [--steps 30]

Importing this module is cheap (the CLI registers its arguments); torch loads on use.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from swiftdiffusion.runtime.lora import profiles, source

if TYPE_CHECKING:
    import torch

DEFAULT_PROMPTS = ("a photo of a cat sitting on a sofa", "a mountain landscape at sunset, oil painting")


def latents_per_step(pipeline, prompt: str, steps: int, seed: int, size: tuple[int, int], guidance: float) -> list[torch.Tensor]:
    """The latent after each denoising step, as diffusers' pipeline computes it."""
    import torch

    captured: list[torch.Tensor] = []

    def capture(pipe, step_index, timestep, tensors):  # noqa: ANN001 (diffusers' callback signature)
        captured.append(tensors["latents"].detach().float().cpu().clone())
        return tensors

    pipeline(
        prompt=prompt, num_inference_steps=steps, guidance_scale=guidance, width=size[0], height=size[1],
        generator=torch.Generator("cpu").manual_seed(seed), output_type="latent",
        callback_on_step_end=capture, callback_on_step_end_tensor_inputs=["latents"],
    )
    return captured


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    import torch

    return torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0).item()


def similarity_curve(
    pipeline,
    lora: bytes,
    scale: float,
    prompts: Sequence[str],
    steps: int,
    seed: int,
    size: tuple[int, int],
    guidance: float,
) -> list[float]:
    """Per step, the lowest similarity over the prompts of the latents with and without the LoRA."""
    from swiftdiffusion.runtime.lora.formats import bind_lora
    from swiftdiffusion.runtime.lora.merge import WeightPatch

    components = {"unet": pipeline.unet, "text_encoder": pipeline.text_encoder, "text_encoder_2": pipeline.text_encoder_2}
    deltas = bind_lora(lora, components)
    curve = [1.0] * steps
    for prompt in prompts:
        base = latents_per_step(pipeline, prompt, steps, seed, size, guidance)
        patch = WeightPatch()
        try:
            patch.merge(deltas, scale)
            with_lora = latents_per_step(pipeline, prompt, steps, seed, size, guidance)
        finally:
            patch.restore()
        curve = [min(low, cosine(a, b)) for low, a, b in zip(curve, base, with_lora)]
    return curve


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="base model id or folder, as written in config.yaml base.model")
    parser.add_argument("--revision", default="main", help="as config.yaml base.revision")
    parser.add_argument("--model-store", help="cache folder for model ids (config.yaml modelStore)")
    parser.add_argument("--lora", required=True, help="LoRA file path or URL (.safetensors)")
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--guidance-scale", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prompt", action="append", help="repeatable; the curve is the minimum over prompts")
    parser.add_argument("--threshold", type=float, default=0.99)
    parser.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default="float32")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--output", type=Path, help="sidecar to write (default: next to a local LoRA file)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m swiftdiffusion.runtime.lora.profile", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """Profile, write the sidecar, print the result as JSON."""
    if args.output is None and source.is_url(args.lora):
        print("--output is required for a LoRA served over HTTP", file=sys.stderr)
        return 2
    from swiftdiffusion.runtime.pipeline.base_model import BaseModel
    from swiftdiffusion.runtime.serving.model_store import resolve

    model = BaseModel.load(resolve(args.model, args.model_store), args.revision, args.dtype, args.model_store, args.device)
    curve = similarity_curve(
        model.pipeline, source.fetch(args.lora), args.scale, args.prompt or DEFAULT_PROMPTS,
        args.steps, args.seed, (args.width, args.height), args.guidance_scale,
    )
    profile = profiles.KProfile(
        base_model=args.model, revision=args.revision, steps=args.steps,
        k=profiles.first_step_below(curve, args.threshold), threshold=args.threshold,
        similarity=tuple(round(value, 6) for value in curve),
    )
    sidecar = profiles.write_profile(args.output or Path(profiles.sidecar_for(args.lora)), profile)
    print(json.dumps({"k": profile.k, "steps": profile.steps, "sidecar": str(sidecar), "similarity": profile.similarity}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
