"""The ControlNet cache's policy without the models: resident names under a byte budget,
least recently used evicted first (runtime/swiftdiffusion/runtime/controlnet/cache.py:
a hit moves the name to the end; a miss loads, then evicts from the front until it fits)."""
from __future__ import annotations

from collections import OrderedDict


class LruNames:
    def __init__(self, budget_bytes: int, item_bytes: int) -> None:
        self.budget_bytes, self.item_bytes = budget_bytes, item_bytes
        self._resident: OrderedDict[str, None] = OrderedDict()

    def get(self, name: str) -> bool:
        """True on a hit; on a miss the name is admitted."""
        if name in self._resident:
            self._resident.move_to_end(name)
            return True
        while self._resident and (len(self._resident) + 1) * self.item_bytes > self.budget_bytes:
            self._resident.popitem(last=False)
        self._resident[name] = None
        return False

    def resident(self) -> list[str]:
        return list(self._resident)
