"""Prometheus metric names of the runtime, defined once.

Torch-free on purpose: the operator (autoscaling objects) and the dashboard import it.
Every metric carries a `role` label (`base` or `controlnet`).
"""
from __future__ import annotations

PREFIX = "swiftdiffusion"

REQUEST_LATENCY_SECONDS = f"{PREFIX}_request_latency_seconds"
"""Histogram: Generate (base) or residual session (controlnet) wall time."""
QUEUE_DEPTH = f"{PREFIX}_queue_depth"
"""Gauge: requests accepted but waiting for the denoising worker (the autoscaling signal)."""
IN_FLIGHT_REQUESTS = f"{PREFIX}_inflight_requests"
"""Gauge: requests being served (base: Generate calls; controlnet: open residual sessions)."""
STEP_SECONDS = f"{PREFIX}_step_seconds"
"""Histogram: one denoising step (base) or one residual computation (controlnet)."""
RESIDUAL_BYTES_TOTAL = f"{PREFIX}_residual_bytes_total"
"""Counter: residual tensor bytes sent (controlnet) or received (base)."""
RESIDUAL_TRANSFER_SECONDS = f"{PREFIX}_residual_transfer_seconds"
"""Histogram: per step, from sending the latent to having the residuals (base side)."""
RESIDUAL_WAIT_SECONDS = f"{PREFIX}_residual_wait_seconds"
"""Histogram: per request, time the denoising loop spent blocked on residuals."""
CONTROLNET_CACHE_HITS_TOTAL = f"{PREFIX}_controlnet_cache_hits_total"
CONTROLNET_CACHE_MISSES_TOTAL = f"{PREFIX}_controlnet_cache_misses_total"
CONTROLNET_CACHE_EVICTIONS_TOTAL = f"{PREFIX}_controlnet_cache_evictions_total"
CONTROLNET_RESIDENT_BYTES = f"{PREFIX}_controlnet_resident_bytes"
"""Gauge: bytes of ControlNet weights resident under the cache budget."""
MODEL_LOAD_SECONDS = f"{PREFIX}_model_load_seconds"
"""Histogram: loading one model (label `kind`: base, controlnet)."""
REQUESTS_TOTAL = f"{PREFIX}_requests_total"
"""Counter: finished requests by gRPC status `code`."""

LORA_LOAD_SECONDS = f"{PREFIX}_lora_load_seconds"
"""Histogram: one LoRA from storage to device-ready factors (BAL's background load)."""
LORA_LOAD_BYTES_TOTAL = f"{PREFIX}_lora_load_bytes_total"
"""Counter: LoRA file bytes read from storage (cache hits read none)."""
LORA_MERGE_STEP = f"{PREFIX}_lora_merge_step"
"""Histogram: the denoising step before which a LoRA was merged (0: before the first)."""
LORA_BLOCKED_STEPS_TOTAL = f"{PREFIX}_lora_blocked_steps_total"
"""Counter: steps at which the loop waited for a LoRA (reached its bound K unloaded)."""
LORA_BLOCKED_SECONDS_TOTAL = f"{PREFIX}_lora_blocked_seconds_total"
"""Counter: loop time spent waiting for LoRAs."""
LORA_CACHE_HITS_TOTAL = f"{PREFIX}_lora_cache_hits_total"
LORA_CACHE_MISSES_TOTAL = f"{PREFIX}_lora_cache_misses_total"

ROLE_LABEL = "role"
ALL = (
    REQUEST_LATENCY_SECONDS,
    QUEUE_DEPTH,
    IN_FLIGHT_REQUESTS,
    STEP_SECONDS,
    RESIDUAL_BYTES_TOTAL,
    RESIDUAL_TRANSFER_SECONDS,
    RESIDUAL_WAIT_SECONDS,
    CONTROLNET_CACHE_HITS_TOTAL,
    CONTROLNET_CACHE_MISSES_TOTAL,
    CONTROLNET_CACHE_EVICTIONS_TOTAL,
    CONTROLNET_RESIDENT_BYTES,
    MODEL_LOAD_SECONDS,
    REQUESTS_TOTAL,
    LORA_LOAD_SECONDS,
    LORA_LOAD_BYTES_TOTAL,
    LORA_MERGE_STEP,
    LORA_BLOCKED_STEPS_TOTAL,
    LORA_BLOCKED_SECONDS_TOTAL,
    LORA_CACHE_HITS_TOTAL,
    LORA_CACHE_MISSES_TOTAL,
)
