"""Polling for eventually-consistent cluster state, with a failure that says what was last seen."""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def eventually(check: Callable[[], T], timeout: float = 60, interval: float = 0.25) -> T:
    """Calls `check` until it returns a truthy value without raising; returns that value.

    On timeout raises AssertionError carrying the last exception or falsy result.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            result = check()
            if result:
                return result
            last = result
        except Exception as error:  # noqa: BLE001 - retried, then reported below
            last = error
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {timeout:.0f} s; last saw: {last!r}")
        time.sleep(interval)
