"""Resident ControlNet models under a byte budget, least recently used evicted first.

ControlNet popularity is extremely skewed, so a small cache hits almost always. A model
still used by an open session stays alive through that session's reference after its
eviction; the budget governs what the cache itself keeps.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Collection

import torch

from swiftdiffusion.runtime.errors import NotFound
from swiftdiffusion.runtime.serving.metrics import RuntimeMetrics


def model_bytes(model: torch.nn.Module) -> int:
    tensors = [*model.parameters(), *model.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


class ControlNetCache:
    def __init__(
        self,
        names: Collection[str],
        loader: Callable[[str], torch.nn.Module],
        budget_bytes: int,
        metrics: RuntimeMetrics,
    ) -> None:
        self._names = frozenset(names)
        self._loader = loader
        self.budget_bytes = budget_bytes
        self._metrics = metrics
        self._resident: OrderedDict[str, tuple[torch.nn.Module, int]] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {name: threading.Lock() for name in self._names}

    @property
    def names(self) -> frozenset[str]:
        return self._names

    def resident(self) -> list[str]:
        """Resident names, least recently used first."""
        with self._lock:
            return list(self._resident)

    @property
    def resident_bytes(self) -> int:
        with self._lock:
            return sum(size for _, size in self._resident.values())

    def get(self, name: str) -> torch.nn.Module:
        """The model, loading it (once, even under concurrent requests) if it is not resident."""
        if name not in self._names:
            raise NotFound("ControlNet", name)
        with self._loading[name]:
            with self._lock:
                if name in self._resident:
                    self._resident.move_to_end(name)
                    self._metrics.cache_hits.inc()
                    return self._resident[name][0]
            self._metrics.cache_misses.inc()
            started = time.perf_counter()
            model = self._loader(name)
            self._metrics.observe_load("controlnet", time.perf_counter() - started)
            self._admit(name, model)
            return model

    def _admit(self, name: str, model: torch.nn.Module) -> None:
        size = model_bytes(model)
        with self._lock:
            while self._resident and sum(s for _, s in self._resident.values()) + size > self.budget_bytes:
                self._resident.popitem(last=False)
                self._metrics.cache_evictions.inc()
            self._resident[name] = (model, size)
            self._metrics.resident_bytes.set(sum(s for _, s in self._resident.values()))
