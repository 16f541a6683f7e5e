"""The LoRA store: names to sources, file bytes through an optional host-memory cache,
and the K profiled for a (base model, LoRA) pair.

A name resolves to the entry configured for it (config.yaml `base.loras`), else to
`<modelStore>/loras/<name>.safetensors` on the mounted volume: LoRA popularity is flat,
so a deployment cannot list every LoRA it serves.
"""
from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from swiftdiffusion.runtime.lora import profiles, source
from swiftdiffusion.runtime.lora.errors import LoraNotFoundError
from swiftdiffusion.runtime.lora.metrics import LoraMetrics

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
TEXT_ENCODER_PREFIXES = ("text_encoder", "lora_te")


@dataclass(frozen=True)
class LoraEntry:
    """One LoRA a base server may apply: where it lives, its default scale and BAL bound."""

    name: str
    source: str
    scale: float = 1.0
    k: int | None = None

    @classmethod
    def from_config(cls, item: Mapping[str, Any], model_store: Path | None = None) -> LoraEntry:
        """From a config.yaml `base.loras` item; a relative path is relative to the model store."""
        where = str(item["source"])
        if model_store is not None and not source.is_url(where) and not Path(where).is_absolute():
            where = str(model_store / where)
        k = item.get("k")
        return cls(str(item["name"]), where, float(item.get("scale", 1.0)), None if k is None else int(k))


class LoraStore:
    """Thread-safe: loader threads read through it while requests resolve names."""

    def __init__(
        self,
        entries: Iterable[LoraEntry] = (),
        model_store: Path | None = None,
        cache_bytes: int = 0,
        metrics: LoraMetrics | None = None,
    ) -> None:
        self._entries = {entry.name: entry for entry in entries}
        self._directory = None if model_store is None else Path(model_store) / "loras"
        self._cache_bytes = cache_bytes
        self._cache: OrderedDict[str, bytes] = OrderedDict()
        self._cached_bytes = 0
        self._text_encoder_parts: dict[str, bool] = {}
        self._profiles: dict[str, list[profiles.KProfile]] = {}
        self._lock = threading.Lock()
        self.metrics = metrics or LoraMetrics()

    def entry(self, name: str) -> LoraEntry:
        """The configured entry, else the file of that name in the store's LoRA folder."""
        if name in self._entries:
            return self._entries[name]
        if self._directory is not None and _NAME.match(name):
            candidate = self._directory / f"{name}.safetensors"
            if candidate.is_file():
                return LoraEntry(name, str(candidate))
        raise LoraNotFoundError(f"unknown LoRA {name!r}")

    def read(self, entry: LoraEntry, cancelled: threading.Event | None = None) -> bytes:
        """The file's bytes, from the host cache when it holds them."""
        with self._lock:
            cached = self._cache.get(entry.source)
            if cached is not None:
                self._cache.move_to_end(entry.source)
                self.metrics.cache_hits.inc()
                return cached
        self.metrics.cache_misses.inc()
        data = source.fetch(entry.source, cancelled)
        self.metrics.load_bytes.inc(len(data))
        self._remember(entry.source, data)
        return data

    def _remember(self, key: str, data: bytes) -> None:
        if len(data) > self._cache_bytes:
            return
        with self._lock:
            if key not in self._cache:
                self._cache[key] = data
                self._cached_bytes += len(data)
            while self._cached_bytes > self._cache_bytes:
                self._cached_bytes -= len(self._cache.popitem(last=False)[1])

    def has_text_encoder_parts(self, entry: LoraEntry) -> bool:
        """Whether the file patches a text encoder (read from its header once, then remembered)."""
        with self._lock:
            known = self._text_encoder_parts.get(entry.source)
        if known is None:
            known = any(key.startswith(TEXT_ENCODER_PREFIXES) for key in source.read_keys(entry.source))
            with self._lock:
                self._text_encoder_parts[entry.source] = known
        return known

    def profiled_k(self, entry: LoraEntry, base_model: str, revision: str, steps: int) -> int | None:
        """K from the LoRA's profile sidecar (read once per source, then remembered)."""
        with self._lock:
            known = self._profiles.get(entry.source)
        if known is None:
            known = profiles.read_profiles(entry.source)
            with self._lock:
                self._profiles[entry.source] = known
        profile = profiles.find_profile(known, base_model, revision, steps)
        return None if profile is None else profile.k_for(steps)
