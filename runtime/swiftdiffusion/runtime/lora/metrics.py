"""BAL and LoRA store metrics, registered in the base server's registry (names in metric_names)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from swiftdiffusion.runtime import metric_names as names

_LOAD_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_STEP_BUCKETS = (0, 1, 2, 3, 5, 8, 10, 15, 20, 30, 50, 100)


class LoraMetrics:
    """Every LoRA metric, labelled with the base role like the rest of the runtime's."""

    def __init__(self, registry: CollectorRegistry | None = None, role: str = "base") -> None:
        self.registry = registry or CollectorRegistry()
        r, label = self.registry, [names.ROLE_LABEL]
        self.load_seconds = Histogram(
            names.LORA_LOAD_SECONDS, "LoRA storage to device.", label, registry=r, buckets=_LOAD_BUCKETS
        ).labels(role)
        self.load_bytes = Counter(names.LORA_LOAD_BYTES_TOTAL, "LoRA bytes read from storage.", label, registry=r).labels(role)
        self.merge_step = Histogram(
            names.LORA_MERGE_STEP, "Step before which a LoRA was merged.", label, registry=r, buckets=_STEP_BUCKETS
        ).labels(role)
        self.blocked_steps = Counter(
            names.LORA_BLOCKED_STEPS_TOTAL, "Steps the loop waited for a LoRA.", label, registry=r
        ).labels(role)
        self.blocked_seconds = Counter(
            names.LORA_BLOCKED_SECONDS_TOTAL, "Loop time spent waiting for LoRAs.", label, registry=r
        ).labels(role)
        self.cache_hits = Counter(names.LORA_CACHE_HITS_TOTAL, "LoRA host cache hits.", label, registry=r).labels(role)
        self.cache_misses = Counter(names.LORA_CACHE_MISSES_TOTAL, "LoRA host cache misses.", label, registry=r).labels(role)
