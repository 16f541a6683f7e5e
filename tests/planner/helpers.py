"""Workflows and a round-number profile that make the planner's answers hand-computable."""
from __future__ import annotations

from typing import Any

from swiftdiffusion.operator import model as m
from swiftdiffusion.planner.profile import Profile

# A step is 0.1 s (encoder 0.05 + decoder 0.05); one ControlNet step 0.08 s plus 0.01 s of
# transfer; 0.5 s outside the loop; a ControlNet miss 1 s; a LoRA 0.4 s to load.
PROFILE = Profile(source="tests", reference_width=64, reference_height=64, base_step_seconds=0.1,
                  encoder_fraction=0.5, controlnet_step_seconds=0.08, residual_transfer_seconds=0.01,
                  fixed_seconds=0.5, latent_parallel_speedup=2.0, controlnet_load_seconds=1.0,
                  controlnet_bytes=100, lora_load_seconds=0.4, lora_merge_seconds=0.05,
                  monolithic_lora_seconds=0.6, pod_start_seconds=20.0)


def workflow(name: str, *, controlnets: tuple[str, ...] = (), base_pool: dict[str, Any] | None = None,
             controlnet_pool: dict[str, Any] | None = None, steps: int = 10, created: int = 0,
             loras: tuple[dict[str, Any], ...] = (), bal_k: int = 10) -> m.Workflow:
    spec = {"base": {"model": "sdxl", "defaults": {"steps": steps, "width": 64, "height": 64}},
            "controlnets": [{"name": cn, "model": f"org/{cn}"} for cn in controlnets],
            "loras": list(loras), "serving": {"balDefaultK": bal_k},
            "basePool": base_pool or {}, "controlnetPool": controlnet_pool or {}}
    return m.Workflow.from_body({"metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}",
                                              "creationTimestamp": f"2026-01-01T00:00:{created:02d}Z"},
                                 "spec": spec})
