"""The runtime image runs the operator's own rendered pods: a base pod and a ControlNet pod of
an example, under the pods' securityContext, serve a Generate with a ControlNet and a LoRA,
from a read-only model store, or from a writable one they download their models into."""
from __future__ import annotations

import io
import os
import shutil
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from swiftdiffusion.operator import model as m
from swiftdiffusion.operator import render
from swiftdiffusion.runtime import metric_names
from swiftdiffusion.runtime.client import generate, generate_request
from swiftdiffusion.runtime.config import GRPC_PORT, METRICS_PORT
from swiftdiffusion.runtime.controlnet.control_image import encode_png
from tests.images.fake_hub import fake_hub
from tests.images.fixtures import example_workflow_with
from tests.images.podman import Container, network_gateway, podman, run_detached
from tests.images.pods import pool_manifests, run_options, write_config_map
from tests.runtime.helpers import control_image
from tests.testbed.fleet.model_store import controlnet_kind
from tests.testbed.waiting import eventually

pytestmark = pytest.mark.slow


@contextmanager
def pool_pod(manifests: list[dict], pool: str, image: str, store: Path, network: str, folder: Path,
             hosts: dict[str, str] | None = None) -> Iterator[Container]:
    config_map, deployment = pool_manifests(manifests, pool)
    sources = {"config": write_config_map(config_map, folder / pool), "models": store}
    container = run_detached(run_options(deployment, image, sources, network, hosts or {}),
                             f"{pool}-{uuid.uuid4().hex[:6]}")
    try:
        yield container
    finally:
        print(f"--- {pool} log tail\n{container.logs()[-3000:]}")
        container.remove()


def serving(container: Container, address: str) -> bool:
    if not container.state()["Running"]:
        pytest.fail(f"{container.name} exited:\n{container.logs()[-3000:]}")
    with grpc.insecure_channel(address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def metric(address: str, name: str, **labels: str) -> float:
    """A metric summed over the series that carry `labels`."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as response:
        families = text_string_to_metric_families(response.read().decode())
    return sum(s.value for f in families for s in f.samples if s.name == name and labels.items() <= s.labels.items())


def exec_in(container: Container, script: str) -> str:
    return podman("exec", container.name, "sh", "-c", script).stdout


def test_rendered_base_and_controlnet_pods_serve_a_generate_with_controlnet_and_lora(
        images: dict[str, str], pod_network: str, example_workflow: m.Workflow, example_store: Path,
        tmp_path: Path) -> None:
    manifests = render.render_workflow(example_workflow)
    base_pool = render.base_pool_name(example_workflow.name)
    cn_pool = render.controlnet_pool_name(example_workflow)
    cn_service = f"{cn_pool}.{example_workflow.namespace}.svc"
    with ExitStack() as stack:
        cn = stack.enter_context(pool_pod(manifests, cn_pool, images["runtime"], example_store, pod_network, tmp_path))
        cn_ip = cn.ip(pod_network)
        base = stack.enter_context(pool_pod(manifests, base_pool, images["runtime"], example_store, pod_network,
                                            tmp_path, hosts={cn_service: cn_ip}))
        base_ip = base.ip(pod_network)
        eventually(lambda: serving(base, f"{base_ip}:{GRPC_PORT}"), timeout=180, interval=1)
        eventually(lambda: serving(cn, f"{cn_ip}:{GRPC_PORT}"), timeout=60, interval=1)

        request = generate_request("a lighthouse at dusk", seed=3, steps=3, width=64, height=64,
                                   controlnets=[("canny", encode_png(control_image(64)), None)],
                                   loras=[("pixel-art", None)])
        reply = generate(f"{base_ip}:{GRPC_PORT}", request, timeout=300)

        image = Image.open(io.BytesIO(reply.png))
        assert (image.format, image.size) == ("PNG", (64, 64))
        # The residuals came from the ControlNet pod, the LoRA from the mounted model store.
        assert metric(f"{cn_ip}:{METRICS_PORT}", metric_names.RESIDUAL_BYTES_TOTAL, role="controlnet") > 0
        assert metric(f"{base_ip}:{METRICS_PORT}", metric_names.LORA_LOAD_BYTES_TOTAL) > 0
        # The pod's securityContext, as the server process has it.
        for container in (base, cn):
            assert exec_in(container, "id -u; id -g").split() == [str(render.RUNTIME_UID)] * 2
            assert "CapEff:\t0000000000000000" in exec_in(container, "cat /proc/1/status")
            assert "CapBnd:\t0000000000000000" in exec_in(container, "cat /proc/1/status")
            assert "NoNewPrivs:\t1" in exec_in(container, "cat /proc/1/status")
            writable = exec_in(container, "for d in / /opt /etc /etc/swiftdiffusion /models /run /var/tmp /tmp; do "
                                          "touch $d/.w 2>/dev/null && echo $d; done")
            assert writable.split() == ["/tmp"]


def with_env(manifests: list[dict], name: str, value: str) -> list[dict]:
    """Every pool pod with one more environment variable (as a cluster admin's mutating
    policy would add a hub mirror)."""
    for manifest in manifests:
        if manifest["kind"] == "Deployment":
            container = manifest["spec"]["template"]["spec"]["containers"][0]
            container["env"] = [*container.get("env", []), {"name": name, "value": value}]
    return manifests


def test_a_writable_store_gets_its_models_downloaded_on_first_start_and_later_starts_offline(
        images: dict[str, str], pod_network: str, tiny_model_set: Path, example_store: Path, tmp_path: Path) -> None:
    workflow = example_workflow_with(read_only_store=False)
    base_pool, cn_pool = render.base_pool_name(workflow.name), render.controlnet_pool_name(workflow)
    store = tmp_path / "store"  # a fresh claim: only the LoRA files an admin put there
    shutil.copytree(example_store / "loras", store / "loras")
    for path in [store, *store.rglob("*")]:
        os.chown(path, render.RUNTIME_UID, render.RUNTIME_UID)
    repos = {workflow.spec.base.model: tiny_model_set / "base"}
    repos |= {cn.model: tiny_model_set / "controlnets" / controlnet_kind(cn.model) for cn in workflow.spec.controlnets}
    with fake_hub(repos) as (port, requests):
        mirror = f"http://{network_gateway(pod_network)}:{port}"
        manifests = with_env(render.render_workflow(workflow), "HF_ENDPOINT", mirror)
        with ExitStack() as stack:
            cn = stack.enter_context(pool_pod(manifests, cn_pool, images["runtime"], store, pod_network, tmp_path))
            base = stack.enter_context(pool_pod(manifests, base_pool, images["runtime"], store, pod_network, tmp_path,
                                                hosts={f"{cn_pool}.{workflow.namespace}.svc": cn.ip(pod_network)}))
            base_address = f"{base.ip(pod_network)}:{GRPC_PORT}"
            eventually(lambda: serving(base, base_address), timeout=180, interval=1)
            eventually(lambda: serving(cn, f"{cn.ip(pod_network)}:{GRPC_PORT}"), timeout=60, interval=1)
            request = generate_request("a lighthouse", seed=1, steps=2, width=64, height=64,
                                       controlnets=[("depth", encode_png(control_image(64)), None)],
                                       loras=[("watercolor", None)])
            assert Image.open(io.BytesIO(generate(base_address, request, timeout=300).png)).size == (64, 64)
            logs = base.logs()
        model = workflow.spec.base.model
        assert f"base model {model}: not in the model store /models; downloading it there" in logs
        assert f"base model {model}: downloaded 0.01 GB into /models/models--" in logs
        assert any(f"/{model}/resolve/" in r for r in requests)
        seen = len(requests)
        # The pod restarts (a new node, a new version): its models are in the store now.
        with pool_pod(manifests, base_pool, images["runtime"], store, pod_network, tmp_path / "again") as again:
            eventually(lambda: serving(again, f"{again.ip(pod_network)}:{GRPC_PORT}"), timeout=180, interval=1)
            assert "downloading" not in again.logs()
        assert len(requests) == seen
