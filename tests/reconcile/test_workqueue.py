"""The work queue: one pending entry per key, never two workers on one key, backoff on failure."""
from __future__ import annotations

import asyncio

from swiftdiffusion.operator.workqueue import WorkQueue


def test_key_added_many_times_is_queued_once() -> None:
    async def scenario() -> list[str]:
        queue = WorkQueue()
        for key in ("a", "b", "a", "a", "b"):
            queue.add(key)
        assert len(queue) == 2
        return [await queue.get(), await queue.get()]

    assert asyncio.run(scenario()) == ["a", "b"]


def test_key_added_while_processing_runs_again_only_after_done() -> None:
    async def scenario() -> None:
        queue = WorkQueue()
        queue.add("a")
        assert await queue.get() == "a"
        queue.add("a")  # a watch event arrives mid-reconcile
        waiting = asyncio.create_task(queue.get())
        await asyncio.sleep(0.01)
        assert not waiting.done()  # a second worker must not take it yet
        queue.done("a")
        assert await asyncio.wait_for(waiting, 1) == "a"

    asyncio.run(scenario())


def test_failures_back_off_exponentially_and_forget_resets() -> None:
    async def scenario() -> list[float]:
        queue = WorkQueue(base_delay=0.01, max_delay=0.04)
        delays = [queue.retry("a") for _ in range(4)]
        queue.forget("a")
        delays.append(queue.retry("a", at_least=0.02))
        assert await asyncio.wait_for(queue.get(), 1) == "a"
        return delays

    assert asyncio.run(scenario()) == [0.01, 0.02, 0.04, 0.04, 0.02]


def test_timers_for_one_key_coalesce_to_the_earliest() -> None:
    """A pending workflow reconciled by several events schedules several rechecks: one fires."""
    async def scenario() -> list[str]:
        queue = WorkQueue()
        for delay in (0.05, 0.02, 0.05, 0.03):
            queue.add_after("a", delay)
        got = [await asyncio.wait_for(queue.get(), 1)]
        queue.done("a")
        await asyncio.sleep(0.1)  # the later timers were dropped, not left to fire
        assert len(queue) == 0
        return got

    assert asyncio.run(scenario()) == ["a"]
