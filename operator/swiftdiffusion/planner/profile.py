"""Service-time profiles: what a step, a ControlNet call, a load and a pod start cost.

A profile is JSON (or YAML) with the fields of `Profile`, plus `source` saying where each
number comes from. Times are per denoising step at `reference_width` x `reference_height`
and scale with the pixel count (a linear approximation: the UNet's cost is dominated by
convolutions and attention over the latent). `from_benchmarks` derives the CPU profile
from the benchmark JSON in docs/measurements, so the shipped file is measured, not typed.
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict

PROFILES = Path(__file__).parent / "profiles"


class Profile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str
    reference_width: int
    reference_height: int
    base_step_seconds: float  # one step of the base UNet, both CFG branches batched on one GPU
    encoder_fraction: float  # share of a base step in the UNet encoder + middle block
    controlnet_step_seconds: float  # one ControlNet's forward for one step (both CFG branches)
    residual_transfer_seconds: float  # per step, base <-> ControlNet pod (decoupled designs)
    # per step, the base replica's own work on that exchange (latent out, residuals in): it runs
    # on the base device beside the encoder, so it shows only where the ControlNets are faster
    residual_exchange_seconds: float = 0.0
    controlnet_open_seconds: float = 0.0  # per ControlNet and request: session set-up, control image embedded
    fixed_seconds: float  # per request outside the loop: prompt encoding, VAE decode
    latent_parallel_speedup: float  # a step's speed-up when the CFG branches run on two GPUs
    controlnet_load_seconds: float  # a cache miss: one ControlNet's weights into GPU memory
    controlnet_bytes: int  # one ControlNet's resident size (against the pool's cacheBytes)
    lora_load_seconds: float  # one LoRA, storage to GPU, in BAL's background
    lora_merge_seconds: float  # one LoRA merged in place (BAL, on the critical path)
    monolithic_lora_seconds: float  # one LoRA loaded and fused before the loop (diffusers)
    pod_start_seconds: float  # a new replica: scheduled to serving
    # per request at the reference size, after the loop: the VAE decode and the image encoding,
    # which the base server runs after it frees its worker for the next request
    decode_seconds: float = 0.0
    # a request taken from its replica's queue as the one before it frees the worker holds the
    # worker this much longer: it starts beside that request's decode
    queued_slowdown: float = 1.0
    # and that decode, beside it, takes this much longer than alone
    queued_decode_slowdown: float = 1.0


def load(path: Path) -> Profile:
    text = path.read_text()
    return Profile.model_validate(json.loads(text) if path.suffix == ".json" else yaml.safe_load(text))


def _median(doc: dict, *keys: str) -> float:
    for key in keys:
        doc = doc[key]
    return doc["median"]


def from_benchmarks(folder: Path, *, pod_start_seconds: float, controlnet_load_seconds: float,
                    controlnet_bytes: int) -> Profile:
    """A profile from one run of bench/controlnet_bench.py (--steps 30 --controlnets 1),
    bench/bal_bench.py (1 and 2 LoRAs) and bench/cfg_bench.py, as docs/measurements keeps
    them. What the benchmarks do not measure is passed in, and named in `source`."""
    cn = json.loads((folder / "controlnet-30.json").read_text())
    cfg = json.loads((folder / "cfg-512.json").read_text())
    parts = cn["results"]["1"]["components_per_step"]
    once = cn["results"]["1"]["setups"]["decoupled 1+1, image embedded once"]
    enc, dec, cn_step = parts["enc"]["median"], parts["dec"]["median"], parts["cn_once"]["median"]
    steps, size = cn["config"]["steps"], cn["config"]["size"]
    loop = once["loop_per_step"]["median"]
    merges, fused = [], []
    for name in ("bal-256-1.json", "bal-256-2.json"):
        bal = json.loads((folder / name).read_text())
        n, setups = bal["config"]["loras"], bal["results"]["setups"]
        merge = (_median(setups, "BAL", "wall") - _median(setups, "no LoRA", "wall")) / n
        merges.append(merge)
        fused.append((_median(setups, "diffusers, LoRA request", "wall") - _median(setups, "diffusers, no LoRA", "wall"))
                     / n)
    lp = cfg["results"]["setups"]
    return Profile(
        source=(f"CPU, measured: {folder} ({cn['command']}; bal_bench 1 and 2 LoRAs; {cfg['command']}); "
                f"controlnet_load_seconds, controlnet_bytes and pod_start_seconds given, not benchmarked"),
        reference_width=size, reference_height=size,
        base_step_seconds=enc + dec, encoder_fraction=enc / (enc + dec), controlnet_step_seconds=cn_step,
        residual_transfer_seconds=max(0.0, loop - (max(enc, cn_step) + dec)),
        fixed_seconds=_median(once, "wall") - steps * loop,
        latent_parallel_speedup=_median(lp, "one-core batched", "wall_per_step") / _median(lp, "two workers",
                                                                                          "wall_per_step"),
        controlnet_load_seconds=controlnet_load_seconds, controlnet_bytes=controlnet_bytes,
        lora_load_seconds=statistics.mean(fused) - statistics.mean(merges), lora_merge_seconds=statistics.mean(merges),
        monolithic_lora_seconds=statistics.mean(fused), pod_start_seconds=pod_start_seconds,
    )
