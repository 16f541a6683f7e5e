"""Bounded asynchronous LoRA loading (BAL) as the denoising loop's step hook.

The loop starts without the request's LoRAs while they load in the background. Before
each step the hook merges every LoRA that has finished loading; before step K it waits
for one that has not. K = 0 merges before the first step (diffusers' fused output); a
LoRA still loading when the loop ends is never merged (the base output). `close()`
restores every touched weight bit for bit and releases the replica's weights.

Text-encoder parts cannot be deferred (the prompt is encoded once, before the loop): a
LoRA that has them is waited for and merged in `before_encode()`, which the engine calls
on its denoising worker right before it encodes the prompt.

The hook takes the replica's weights (exclusively when it has LoRAs) on its first
`before_encode`/`before_step`, that is inside the engine's turn on the worker, so
building the hook (and starting the loads) can overlap the wait in the queue.
"""
from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from swiftdiffusion.runtime.errors import NotFound
from swiftdiffusion.runtime.lora.errors import LoraNotFoundError
from swiftdiffusion.runtime.lora.loader import LoraLoad, LoraLoader
from swiftdiffusion.runtime.lora.merge import WeightPatch
from swiftdiffusion.runtime.lora.metrics import LoraMetrics
from swiftdiffusion.runtime.lora.replica_lock import ReplicaWeightsLock
from swiftdiffusion.runtime.lora.store import LoraEntry, LoraStore
from swiftdiffusion.runtime.pipeline.step_hooks import LoraUse


@dataclass
class PendingLora:
    name: str
    load: LoraLoad
    scale: float
    k: int
    text_parts: bool = False
    merged_at: int | None = None


class BalHook:
    """One request's LoRAs on the shared base weights, from its first call to `close()`."""

    def __init__(self, lock: ReplicaWeightsLock, exclusive: bool, metrics: LoraMetrics) -> None:
        self.pending: list[PendingLora] = []
        self._patch = WeightPatch()
        self._lock, self._exclusive, self._metrics = lock, exclusive, metrics
        self._held = self._closed = False

    @property
    def merged_mask(self) -> int:
        """Bit i set once the request's i-th LoRA is merged (for latent-parallel followers)."""
        return sum(1 << i for i, p in enumerate(self.pending) if p.merged_at is not None)

    def _hold(self) -> None:
        if not self._held:
            self._lock.acquire(self._exclusive)
            self._held = True

    def before_encode(self) -> None:
        """Wait for and merge every LoRA with text-encoder parts (they cannot be deferred)."""
        self._hold()
        for pending in self.pending:
            if pending.text_parts and pending.merged_at is None:
                self._merge(pending, 0)

    def before_step(self, step_index: int) -> None:
        self._hold()
        for pending in self.pending:
            if pending.merged_at is not None:
                continue
            if pending.text_parts:
                raise RuntimeError(f"LoRA {pending.name!r} patches a text encoder: call before_encode() first")
            if pending.load.ready():
                self._merge(pending, step_index)
            elif step_index >= pending.k:
                waited = time.perf_counter()
                self._merge(pending, step_index)
                self._metrics.blocked_steps.inc()
                self._metrics.blocked_seconds.inc(time.perf_counter() - waited)

    def _merge(self, pending: PendingLora, step: int) -> None:
        self._patch.merge(pending.load.result(), pending.scale)
        pending.merged_at = step
        self._metrics.merge_step.observe(step)

    def close(self) -> None:
        """Restore the base weights and let the next request have them; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            self._patch.restore()
        finally:
            for pending in self.pending:
                pending.load.cancel()
            if self._held:
                self._lock.release(self._exclusive)


class BalHookFactory:
    """The base server's step-hook factory (runtime.step_hooks.StepHookFactory) with BAL."""

    def __init__(
        self,
        store: LoraStore,
        text_encoders: Mapping[str, torch.nn.Module],
        default_k: int,
        base_model: str = "",
        revision: str = "",
        workers: int = 2,
    ) -> None:
        self.store = store
        self._text_encoders = dict(text_encoders)
        self._default_k = default_k
        self._base = (base_model, revision)
        self._lock = ReplicaWeightsLock()
        self._loader = LoraLoader(store, self._text_encoders, workers)

    def __call__(self, loras: Sequence[LoraUse], unet: torch.nn.Module, steps: int) -> BalHook:
        """Start every LoRA loading; raise NotFound for an unknown name, LoraError for an unreadable file."""
        hook = BalHook(self._lock, bool(loras), self.store.metrics)
        try:
            for use in loras:
                try:
                    entry = self.store.entry(use.name)
                except LoraNotFoundError as error:
                    raise NotFound("LoRA", use.name) from error
                text_parts = self.store.has_text_encoder_parts(entry)
                scale = entry.scale if use.scale is None else use.scale
                load = self._loader.start(entry, unet)
                hook.pending.append(PendingLora(use.name, load, scale, max(0, self._bound(use, entry, steps)), text_parts))
        except BaseException:
            hook.close()
            raise
        return hook

    def _bound(self, use: LoraUse, entry: LoraEntry, steps: int) -> int:
        """K: the request's, else the configured one, else the profiled one, else the default."""
        for k in (use.k, entry.k):
            if k is not None:
                return k
        profiled = self.store.profiled_k(entry, *self._base, steps)
        return self._default_k if profiled is None else profiled

    def close(self) -> None:
        self._loader.close()
