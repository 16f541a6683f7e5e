"""Background LoRA loading: storage -> host memory -> device, off the denoising thread.

The loader thread only reads, parses and copies factors; it never touches a base
weight. On CUDA the copy runs on a side stream and the denoising thread waits on its
event before merging, so the first steps overlap the transfer.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor

import torch

from swiftdiffusion.runtime.lora.formats import LayerDelta, bind_lora
from swiftdiffusion.runtime.lora.store import LoraEntry, LoraStore


class LoraLoad:
    """One LoRA on its way to the device; `result()` is for the denoising thread."""

    def __init__(self, future: Future[tuple[tuple[LayerDelta, ...], torch.cuda.Event | None]], cancelled: threading.Event):
        self._future = future
        self._cancelled = cancelled

    def ready(self) -> bool:
        return self._future.done()

    def result(self) -> tuple[LayerDelta, ...]:
        """Block until loaded; raises the load's LoraError."""
        deltas, event = self._future.result()
        if event is not None:
            stream = torch.cuda.current_stream(deltas[0].weight.device)
            stream.wait_event(event)
            for delta in deltas:
                delta.up.record_stream(stream)
                delta.down.record_stream(stream)
        return deltas

    def cancel(self) -> None:
        self._cancelled.set()
        self._future.cancel()


class LoraLoader:
    """A small pool of loader threads shared by a base server's requests."""

    def __init__(self, store: LoraStore, components: Mapping[str, torch.nn.Module], workers: int = 2) -> None:
        self._store = store
        self._components = dict(components)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lora-loader")

    def start(self, entry: LoraEntry, unet: torch.nn.Module | None = None) -> LoraLoad:
        """Begin loading `entry` against the base components (`unet` overrides the UNet)."""
        components = {**self._components, **({"unet": unet} if unet is not None else {})}
        cancelled = threading.Event()
        future = self._pool.submit(self._load, entry, components, cancelled)
        return LoraLoad(future, cancelled)

    def _load(
        self, entry: LoraEntry, components: Mapping[str, torch.nn.Module], cancelled: threading.Event
    ) -> tuple[tuple[LayerDelta, ...], torch.cuda.Event | None]:
        started = time.perf_counter()
        deltas = bind_lora(self._store.read(entry, cancelled), components)
        moved, event = _to_device(deltas)
        self._store.metrics.load_seconds.observe(time.perf_counter() - started)
        return moved, event

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _to_device(deltas: tuple[LayerDelta, ...]) -> tuple[tuple[LayerDelta, ...], torch.cuda.Event | None]:
    device = deltas[0].weight.device
    if device.type != "cuda":
        return tuple(delta.to(device) for delta in deltas), None
    stream = torch.cuda.Stream(device)
    with torch.cuda.stream(stream):
        moved = tuple(delta.to(device, non_blocking=True) for delta in deltas)
        event = torch.cuda.Event()
        event.record(stream)
    return moved, event
