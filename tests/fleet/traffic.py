"""Traffic for fleet tests: requests through a pool's Service name, concurrent clients, and
what each pod says it served (its own /metrics, on its own address)."""
from __future__ import annotations

import datetime
import io
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import grpc
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from swiftdiffusion.operator import kube
from swiftdiffusion.runtime import metric_names
from swiftdiffusion.runtime.client import generate, generate_request
from swiftdiffusion.runtime.config import GRPC_PORT, METRICS_PORT
from swiftdiffusion.runtime.serving.api import base_pb2
from tests.reconcile.fixtures import Cluster
from tests.testbed.cluster import TestBed
from tests.testbed.waiting import eventually

PNG = b"\x89PNG\r\n\x1a\n"


def control_image() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(out, format="PNG")
    return out.getvalue()


def service_target(fleet: TestBed, namespace: str, service: str) -> str:
    return f"dns://{fleet.network().dns_ip}:53/{service}.{namespace}.svc.cluster.local:{GRPC_PORT}"


def small_request(workflow: dict[str, Any], seed: int = 0, steps: int = 3) -> base_pb2.GenerateRequest:
    """64 px with the workflow's first ControlNet and first LoRA."""
    spec = workflow["spec"]
    controlnets = [(spec["controlnets"][0]["name"], control_image(), None)] if spec.get("controlnets") else []
    loras = [(spec["loras"][0]["name"], None)] if spec.get("loras") else []
    return generate_request("a red cube", seed=seed, steps=steps, width=64, height=64, guidance_scale=5.0,
                            controlnets=controlnets, loras=loras)


def pod_samples(pod_ip: str, timeout: float = 5) -> list[Sample]:
    """Every sample of a pod's own /metrics, read on its own address."""
    with urllib.request.urlopen(f"http://{pod_ip}:{METRICS_PORT}/metrics", timeout=timeout) as response:
        text = response.read().decode()
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def served_requests(pod: dict[str, Any]) -> float:
    """Requests a pod finished with OK (a ControlNet pod's: residual sessions)."""
    return sum(sample.value for sample in pod_samples(pod["status"]["podIP"])
               if sample.name == metric_names.REQUESTS_TOTAL and sample.labels.get("code") == "OK")


def is_ready(pod: dict[str, Any]) -> bool:
    return not pod["metadata"].get("deletionTimestamp") and any(
        c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", []))


def ready_pods(cluster: Cluster, pool: str) -> list[dict[str, Any]]:
    return [p for p in cluster.pods(pool) if is_ready(p)]


def ready_since(pod: dict[str, Any]) -> str:
    return next(c["lastTransitionTime"] for c in pod["status"]["conditions"] if c["type"] == "Ready")


def seconds_between(earlier: str, later: str) -> float:
    parse = datetime.datetime.fromisoformat
    return (parse(later) - parse(earlier)).total_seconds()


def patch_workflow(cluster: Cluster, name: str, spec: dict[str, Any]) -> None:
    path = f"/apis/swiftdiffusion.io/v1alpha1/namespaces/{cluster.namespace}/t2iworkflows/{name}"
    kube.request(cluster.api, "PATCH", path, body={"spec": spec}, content_type="application/merge-patch+json")


@dataclass
class Load:
    """`clients` threads, each with its own channel, sending until stopped."""

    target: str
    workflow: dict[str, Any]
    clients: int = 6
    steps: int = 3
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def _client(self, index: int) -> None:
        seed = index * 1000
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                reply = generate(self.target, small_request(self.workflow, seed, self.steps), timeout=120)
                assert reply.png.startswith(PNG)
                self.latencies.append(time.monotonic() - started)
            except (grpc.RpcError, AssertionError) as error:
                detail = error.details() if isinstance(error, grpc.RpcError) else str(error)
                self.failures.append(f"{type(error).__name__}: {detail}")
            seed += 1

    def __enter__(self) -> Load:
        self.threads = [threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(self.clients)]
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=180)

    def wait_for(self, count: int, timeout: float = 300) -> None:
        eventually(lambda: len(self.latencies) + len(self.failures) >= count, timeout=timeout, interval=0.5)
