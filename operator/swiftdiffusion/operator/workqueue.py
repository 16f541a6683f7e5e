"""A work queue with client-go's guarantees, for the asyncio loop kopf runs in.

A key waits in the queue at most once however many watch events name it, and two
workers never reconcile the same key at once; a key added while it is being processed
runs again right after. Failed keys come back after a per-key exponential backoff.
"""
from __future__ import annotations

import asyncio
from collections.abc import Hashable

from swiftdiffusion.operator.metrics import QUEUE_DEPTH


class WorkQueue:
    def __init__(self, base_delay: float = 0.5, max_delay: float = 60.0) -> None:
        self._queue: asyncio.Queue[Hashable] = asyncio.Queue()
        self._dirty: set[Hashable] = set()
        self._processing: set[Hashable] = set()
        self._failures: dict[Hashable, int] = {}
        self._timers: dict[Hashable, asyncio.TimerHandle] = {}
        self._base_delay, self._max_delay = base_delay, max_delay

    def __len__(self) -> int:
        return len(self._dirty)

    def add(self, key: Hashable) -> None:
        if key in self._dirty:
            return
        self._dirty.add(key)
        QUEUE_DEPTH.set(len(self._dirty))
        if key not in self._processing:
            self._queue.put_nowait(key)

    def add_after(self, key: Hashable, delay: float) -> None:
        """At most one timer per key, the earliest: a key rechecked or retried from several
        reconciles must not come back once per timer."""
        loop = asyncio.get_running_loop()
        due = loop.time() + delay
        pending = self._timers.get(key)
        if pending is not None:
            if pending.when() <= due:
                return
            pending.cancel()
        self._timers[key] = loop.call_at(due, self._fire, key)

    def _fire(self, key: Hashable) -> None:
        self._timers.pop(key, None)
        self.add(key)

    def retry(self, key: Hashable, at_least: float = 0.0) -> float:
        """Re-adds a failed key after its backoff (doubling per consecutive failure); returns the delay."""
        failures = self._failures.get(key, 0)
        self._failures[key] = failures + 1
        delay = max(at_least, min(self._max_delay, self._base_delay * 2**failures))
        self.add_after(key, delay)
        return delay

    def forget(self, key: Hashable) -> None:
        self._failures.pop(key, None)

    async def get(self) -> Hashable:
        key = await self._queue.get()
        self._dirty.discard(key)
        self._processing.add(key)
        QUEUE_DEPTH.set(len(self._dirty))
        return key

    def done(self, key: Hashable) -> None:
        self._processing.discard(key)
        if key in self._dirty:
            self._queue.put_nowait(key)
