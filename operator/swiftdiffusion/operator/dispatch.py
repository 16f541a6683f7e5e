"""Turns watch events into reconcile keys, and runs the workers that reconcile them.

Workflow events queue the workflow (and the shared pool it left, if any); events on
the children the operator owns update the child cache and queue whatever owns them, so
a deleted or hand-edited child is put back. A shared pool's events queue the pool and its member workflows,
whose status shows the pool's replicas.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from swiftdiffusion.operator import render
from swiftdiffusion.operator.cache import ChildCache
from swiftdiffusion.operator.controller import (
    PERMANENT_RETRY_SECONDS,
    SHARED_POOL,
    WORKFLOW,
    Controller,
    Key,
    ReconcileError,
)
from swiftdiffusion.operator.metrics import RECONCILE_ERRORS, RECONCILE_SECONDS, RECONCILES
from swiftdiffusion.operator.workqueue import WorkQueue

log = logging.getLogger(__name__)


def _shared_pool(body: dict[str, Any]) -> str | None:
    spec = body.get("spec") or {}
    return (spec.get("controlnetPool") or {}).get("sharedPoolName") if spec.get("controlnets") else None


class Dispatcher:
    def __init__(self, queue: WorkQueue, cache: ChildCache) -> None:
        self.queue = queue
        self.cache = cache
        self._pool_of: dict[tuple[str, str], str | None] = {}
        self._members: dict[tuple[str, str], set[str]] = defaultdict(set)

    def on_workflow(self, event_type: str | None, body: dict[str, Any]) -> None:
        ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
        old = self._pool_of.get((ns, name))
        new = None if event_type == "DELETED" else _shared_pool(body)
        if old != new:
            if old:
                self._members[(ns, old)].discard(name)
                self.queue.add((SHARED_POOL, ns, old))
            if new:
                self._members[(ns, new)].add(name)
        if event_type == "DELETED":
            self._pool_of.pop((ns, name), None)
            return
        self._pool_of[(ns, name)] = new
        self.queue.add((WORKFLOW, ns, name))

    def on_child(self, event_type: str | None, kind: str, body: dict[str, Any]) -> None:
        if event_type == "DELETED":
            self.cache.drop(kind, body)
        else:
            self.cache.put(kind, body)
        meta = body["metadata"]
        labels = meta.get("labels") or {}
        ns = meta["namespace"]
        if workflow := labels.get(render.WORKFLOW_LABEL):
            self.queue.add((WORKFLOW, ns, workflow))
        if pool := labels.get(render.SHARED_POOL_LABEL):
            self.queue.add((SHARED_POOL, ns, pool))
            for member in sorted(self._members.get((ns, pool), ())):
                self.queue.add((WORKFLOW, ns, member))


async def run_worker(queue: WorkQueue, controller: Controller, executor: ThreadPoolExecutor) -> None:
    loop = asyncio.get_running_loop()
    while True:
        key: Key = await queue.get()  # type: ignore[assignment]
        kind = key[0]
        started = time.monotonic()
        try:
            outcome = await loop.run_in_executor(executor, controller.reconcile, key)
        except ReconcileError as error:
            RECONCILE_ERRORS.labels(kind=kind, retried=str(error.transient).lower()).inc()
            delay = queue.retry(key, 0.0 if error.transient else PERMANENT_RETRY_SECONDS)
            log.warning("reconcile %s failed (retry in %.1f s): %s", key, delay, error)
        except Exception:  # a bug must not kill the worker; the key is retried with backoff
            RECONCILE_ERRORS.labels(kind=kind, retried="true").inc()
            delay = queue.retry(key)
            log.exception("reconcile %s crashed (retry in %.1f s)", key, delay)
        else:
            queue.forget(key)
            for follow_up in outcome.follow_ups:
                queue.add(follow_up)
            if outcome.recheck_after is not None:
                queue.add_after(key, outcome.recheck_after)
        finally:
            RECONCILES.labels(kind=kind).inc()
            RECONCILE_SECONDS.labels(kind=kind).observe(time.monotonic() - started)
            queue.done(key)
