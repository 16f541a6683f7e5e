"""Who may use a replica's base weights at once.

A request that merges a LoRA changes the shared base weights, so it holds them
alone; requests without LoRAs only read them and may run together. Writers are
preferred, so a stream of base-only requests cannot starve a LoRA request.
"""
from __future__ import annotations

import threading


class ReplicaWeightsLock:
    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    def acquire(self, exclusive: bool) -> None:
        with self._condition:
            if exclusive:
                self._writers_waiting += 1
                self._condition.wait_for(lambda: not self._writer and self._readers == 0)
                self._writers_waiting -= 1
                self._writer = True
            else:
                self._condition.wait_for(lambda: not self._writer and self._writers_waiting == 0)
                self._readers += 1

    def release(self, exclusive: bool) -> None:
        with self._condition:
            if exclusive:
                self._writer = False
            else:
                self._readers -= 1
            self._condition.notify_all()
