"""A base engine on the tiny model set with BAL wired in, and diffusers reference runs."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import StableDiffusionXLPipeline

from swiftdiffusion.runtime.lora.bal import BalHookFactory
from swiftdiffusion.runtime.lora.store import LoraEntry, LoraStore
from swiftdiffusion.runtime.pipeline.base_model import BaseModel
from swiftdiffusion.runtime.pipeline.engine import BaseEngine
from swiftdiffusion.runtime.pipeline.requests import GenerateParams
from swiftdiffusion.runtime.pipeline.step_hooks import LoraUse
from tests.lora.fixtures import load_pipeline

STEPS = 4


@dataclass
class BalEngine:
    engine: BaseEngine
    factory: BalHookFactory
    pipeline: StableDiffusionXLPipeline

    def run(self, *loras: LoraUse, **overrides: object) -> torch.Tensor:
        return self.engine.generate(params(*loras, **overrides), decode=False).latents

    def weights(self) -> dict[str, torch.Tensor]:
        """A copy of every UNet and text-encoder tensor, to compare bit for bit."""
        modules = {"unet": self.pipeline.unet, "te": self.pipeline.text_encoder, "te2": self.pipeline.text_encoder_2}
        return {f"{m}.{k}": v.clone() for m, module in modules.items() for k, v in module.state_dict().items()}


def params(*loras: LoraUse, **overrides: object) -> GenerateParams:
    fields = dict(prompt="a red cube on a table", seed=7, steps=STEPS, guidance_scale=5.0, width=64, height=64)
    return GenerateParams(**{**fields, **overrides}, loras=tuple(loras))


def bal_engine(model_set: Path, entries: Sequence[LoraEntry], default_k: int = 0, cache_bytes: int = 0) -> BalEngine:
    pipeline = load_pipeline(model_set)
    store = LoraStore(entries, cache_bytes=cache_bytes)
    text_encoders = {"text_encoder": pipeline.text_encoder, "text_encoder_2": pipeline.text_encoder_2}
    factory = BalHookFactory(store, text_encoders, default_k)
    return BalEngine(BaseEngine(BaseModel(pipeline), step_hooks=factory), factory, pipeline)


def diffusers_with_loras(
    model_set: Path, loras: Sequence[tuple[Path, float]], from_step: int = 0, output_type: str = "latent", **overrides: object
):
    """diffusers' own run: LoRAs loaded with load_lora_weights and fused (from_step 0), or
    left unfused, disabled, and enabled by a step-end callback before step `from_step`."""
    request = params(**overrides)
    pipeline = load_pipeline(model_set)
    names = [f"lora{i}" for i in range(len(loras))]
    for name, (path, _) in zip(names, loras):
        pipeline.load_lora_weights(str(path), adapter_name=name)
    pipeline.set_adapters(names, adapter_weights=[scale for _, scale in loras])
    callback = None
    if from_step == 0:
        pipeline.fuse_lora(components=["unet", "text_encoder", "text_encoder_2"], adapter_names=names)
    else:
        pipeline.disable_lora()

        def callback(pipe, step_index, timestep, tensors):  # noqa: ANN001 (diffusers' callback signature)
            if step_index == from_step - 1:
                pipe.enable_lora()
            return tensors

    return pipeline(
        prompt=request.prompt, num_inference_steps=request.steps, guidance_scale=request.guidance_scale,
        width=request.width, height=request.height, generator=torch.Generator().manual_seed(request.seed),
        output_type=output_type, callback_on_step_end=callback,
    ).images
