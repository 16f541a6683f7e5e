"""The ControlNet cache keeps the most recently used models under its byte budget."""
from __future__ import annotations

import threading

import pytest
import torch

from swiftdiffusion.runtime.controlnet.cache import ControlNetCache, model_bytes
from swiftdiffusion.runtime.errors import NotFound
from swiftdiffusion.runtime.serving.metrics import RuntimeMetrics


class CountingLoader:
    def __init__(self) -> None:
        self.loads: list[str] = []

    def __call__(self, name: str) -> torch.nn.Module:
        self.loads.append(name)
        return torch.nn.Linear(16, 16)  # 16*16+16 floats = 1088 bytes


def _cache(budget_models: int, loader: CountingLoader) -> tuple[ControlNetCache, RuntimeMetrics]:
    metrics = RuntimeMetrics("controlnet")
    size = model_bytes(torch.nn.Linear(16, 16))
    return ControlNetCache(["a", "b", "c"], loader, budget_models * size, metrics), metrics


def test_least_recently_used_model_is_evicted_first() -> None:
    loader = CountingLoader()
    cache, metrics = _cache(2, loader)
    cache.get("a"), cache.get("b"), cache.get("a"), cache.get("c")
    assert cache.resident() == ["a", "c"]
    assert loader.loads == ["a", "b", "c"]
    assert metrics.cache_evictions._value.get() == 1
    assert metrics.cache_hits._value.get() == 1 and metrics.cache_misses._value.get() == 3
    assert metrics.resident_bytes._value.get() == cache.resident_bytes == 2 * 1088


def test_evicted_model_is_loaded_again_on_demand() -> None:
    loader = CountingLoader()
    cache, _ = _cache(1, loader)
    cache.get("a"), cache.get("b"), cache.get("a")
    assert loader.loads == ["a", "b", "a"]


def test_concurrent_requests_for_a_missing_model_load_it_once() -> None:
    loader = CountingLoader()
    cache, _ = _cache(3, loader)
    results: list[torch.nn.Module] = []
    threads = [threading.Thread(target=lambda: results.append(cache.get("b"))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert loader.loads == ["b"] and all(r is results[0] for r in results)


def test_unknown_name_is_not_found() -> None:
    cache, _ = _cache(1, CountingLoader())
    with pytest.raises(NotFound, match="scribble"):
        cache.get("scribble")
