"""kopf wiring: settings, the worker pool, and watch handlers that only queue keys.

Why watch events and a work queue instead of kopf's create/update/resume handlers:
those persist progress and a diff base on every handled object (writes on every
change and again on every restart), and do not fire when a child drifts. Here kopf
provides watching, login, liveness and lifecycle; reconciles are level-based, run
per key at most once at a time, and retried with backoff (dispatch.py).
"""
from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kopf
from kubernetes import config
from kubernetes.client import ApiClient
from prometheus_client import start_http_server

from swiftdiffusion.operator import autoscaling, kube, netpol, render
from swiftdiffusion.operator import model as m
from swiftdiffusion.operator.cache import ChildCache
from swiftdiffusion.operator.controller import SHARED_POOL, WORKFLOW, Controller
from swiftdiffusion.operator.dispatch import Dispatcher, run_worker
from swiftdiffusion.operator.metrics import create_series
from swiftdiffusion.operator.render import FIELD_MANAGER, MANAGED_BY
from swiftdiffusion.operator.workqueue import WorkQueue


def _api_client() -> ApiClient:
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return ApiClient()


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: logging.Logger, **_: Any) -> None:
    settings.peering.standalone = True  # one replica, Recreate strategy: no peering objects needed
    settings.scanning.disabled = True  # resources are known; no cluster-wide CRD/namespace watch (RBAC)
    settings.posting.enabled = False  # events are posted by the controller, only when it changed something
    settings.persistence.finalizer = f"{m.GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=m.GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=m.GROUP)
    settings.watching.server_timeout = 600
    workers = int(memo.get("workers", 4))
    if memo.get("metrics_port"):
        create_series((WORKFLOW, SHARED_POOL), kube.PLURALS.values())
        start_http_server(int(memo["metrics_port"]))
    memo.queue = WorkQueue()
    cache = ChildCache()
    memo.dispatcher = Dispatcher(memo.queue, cache)
    memo.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="reconcile")
    controller = Controller(_api_client(), cache, memo.get("network", netpol.DEFAULT),
                            memo.get("scaling", autoscaling.DEFAULT))
    memo.tasks = [asyncio.create_task(run_worker(memo.queue, controller, memo.executor)) for _ in range(workers)]
    logger.info("%s started with %d workers", FIELD_MANAGER, workers)


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    for task in memo.get("tasks", []):
        task.cancel()
    await asyncio.gather(*memo.get("tasks", []), return_exceptions=True)
    if "executor" in memo:
        memo.executor.shutdown(wait=False, cancel_futures=True)


@kopf.on.event(m.GROUP, m.VERSION, m.PLURAL)
async def workflow_event(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    memo.dispatcher.on_workflow(event.get("type"), dict(body))


async def child_event(event: kopf.RawEvent, body: kopf.Body, resource: kopf.Resource, memo: kopf.Memo,
                      **_: Any) -> None:
    memo.dispatcher.on_child(event.get("type"), resource.kind, dict(body))


for _api_version, _kind in render.POOL_KINDS:
    _group, _, _version = _api_version.rpartition("/")
    kopf.on.event(_group, _version, kube.PLURALS[_kind], id=f"child-{_kind.lower()}", labels=MANAGED_BY)(child_event)
