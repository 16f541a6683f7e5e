"""The test bed schedules, garbage-collects and validates like a real cluster."""
from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.testbed.nodes import GPU_RESOURCE, GPU_TAINT
from tests.testbed.waiting import eventually

pytestmark = pytest.mark.cluster

PRODUCT_LABEL = "nvidia.com/gpu.product"


def gpu_deployment(name: str, product: str, replicas: int) -> dict[str, Any]:
    """A Deployment whose pods each take one GPU of `product`, tolerating the GPU taint."""
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [{
                        "name": "worker",
                        "image": "registry.invalid/swiftdiffusion/worker:test",
                        "resources": {"limits": {GPU_RESOURCE: "1"}, "requests": {GPU_RESOURCE: "1"}},
                    }],
                    "tolerations": [{"key": GPU_TAINT["key"], "operator": "Exists", "effect": "NoSchedule"}],
                    "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [{"matchExpressions": [
                            {"key": PRODUCT_LABEL, "operator": "In", "values": [product]},
                        ]}],
                    }}},
                },
            },
        },
    }


def pods_of(core: client.CoreV1Api, namespace: str, app: str) -> list[client.V1Pod]:
    return core.list_namespaced_pod(namespace, label_selector=f"app={app}").items


def is_running_and_ready(pod: client.V1Pod) -> bool:
    conditions = pod.status.conditions or []
    ready = any(c.type == "Ready" and c.status == "True" for c in conditions)
    return pod.status.phase == "Running" and ready


def test_gpu_deployment_with_h800_affinity_runs_only_on_h800_nodes(k8s_client, namespace):
    apps, core = client.AppsV1Api(k8s_client), client.CoreV1Api(k8s_client)
    apps.create_namespaced_deployment(namespace, gpu_deployment("h800", "NVIDIA-H800", replicas=6))

    def all_running() -> list[client.V1Pod]:
        pods = pods_of(core, namespace, "h800")
        return pods if len(pods) == 6 and all(map(is_running_and_ready, pods)) else []

    pods = eventually(all_running, timeout=90)
    products = {core.read_node(p.spec.node_name).metadata.labels[PRODUCT_LABEL] for p in pods}
    assert products == {"NVIDIA-H800"}
    assert all(p.spec.node_name.startswith("gpu-h800-") for p in pods)

    def fully_available() -> client.V1Deployment | None:
        deployment = apps.read_namespaced_deployment("h800", namespace)
        return deployment if deployment.status.available_replicas == 6 else None

    assert eventually(fully_available, timeout=30).status.ready_replicas == 6


def test_deployment_for_missing_gpu_product_stays_pending_with_failed_scheduling_event(k8s_client, namespace):
    apps, core = client.AppsV1Api(k8s_client), client.CoreV1Api(k8s_client)
    apps.create_namespaced_deployment(namespace, gpu_deployment("b200", "NVIDIA-B200", replicas=1))

    def failed_scheduling() -> list[client.CoreV1Event]:
        events = core.list_namespaced_event(namespace, field_selector="reason=FailedScheduling").items
        return [e for e in events if e.involved_object.kind == "Pod"]

    events = eventually(failed_scheduling, timeout=60)
    assert "didn't match Pod's node affinity/selector" in events[0].message
    (pod,) = pods_of(core, namespace, "b200")
    assert pod.status.phase == "Pending"
    assert pod.spec.node_name is None


def test_deleting_an_owner_garbage_collects_its_dependents(k8s_client, namespace):
    core = client.CoreV1Api(k8s_client)
    owner = core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="owner"))
    )
    reference = client.V1OwnerReference(
        api_version="v1", kind="ConfigMap", name="owner", uid=owner.metadata.uid
    )
    core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="dependent", owner_references=[reference]))
    )
    core.delete_namespaced_config_map("owner", namespace, propagation_policy="Background")

    def dependent_gone() -> bool:
        try:
            core.read_namespaced_config_map("dependent", namespace)
        except ApiException as error:
            return error.status == 404
        return False

    eventually(dependent_gone, timeout=60)


def test_deployment_with_negative_replicas_is_rejected_naming_the_field(k8s_client, namespace):
    apps = client.AppsV1Api(k8s_client)
    with pytest.raises(ApiException) as rejected:
        apps.create_namespaced_deployment(namespace, gpu_deployment("invalid", "NVIDIA-H800", replicas=-1))
    assert rejected.value.status == 422
    assert "spec.replicas" in rejected.value.body
    assert apps.list_namespaced_deployment(namespace).items == []
