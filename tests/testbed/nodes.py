"""Fake GPU nodes: Node objects shaped like the ones NVIDIA's GPU operator and device
plugin leave on real GPU machines, marked for kwok to play their kubelet."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

KWOK_ANNOTATION = "kwok.x-k8s.io/node"
KWOK_ANNOTATION_VALUE = "fake"
GPU_RESOURCE = "nvidia.com/gpu"
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}


@dataclass(frozen=True)
class GpuPool:
    """`count` identical nodes named `<prefix>-0..count-1`."""

    prefix: str
    product: str
    count: int
    gpus_per_node: int = 8
    cpu: str = "128"
    memory: str = "1Ti"
    pods: str = "110"


DEFAULT_POOLS = (
    GpuPool("gpu-h800", "NVIDIA-H800", 4),
    GpuPool("gpu-h100", "NVIDIA-H100-80GB-HBM3", 2),
)
# The fleet's nodes run real processes: fewer of them, enough for every example.
FLEET_POOLS = (
    GpuPool("gpu-h800", "NVIDIA-H800", 2),
    GpuPool("gpu-h100", "NVIDIA-H100-80GB-HBM3", 1),
)


def gpu_node(pool: GpuPool, index: int) -> dict[str, Any]:
    name = f"{pool.prefix}-{index}"
    resources = {
        "cpu": pool.cpu,
        "memory": pool.memory,
        "pods": pool.pods,
        "ephemeral-storage": "1Ti",
        GPU_RESOURCE: str(pool.gpus_per_node),
    }
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {KWOK_ANNOTATION: KWOK_ANNOTATION_VALUE, "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "beta.kubernetes.io/os": "linux",
                "beta.kubernetes.io/arch": "amd64",
                "node-role.kubernetes.io/gpu": "",
                "type": "kwok",
                "nvidia.com/gpu.present": "true",
                "nvidia.com/gpu.product": pool.product,
                "nvidia.com/gpu.count": str(pool.gpus_per_node),
            },
        },
        "spec": {"taints": [dict(GPU_TAINT)]},
        "status": {
            "capacity": resources,
            "allocatable": resources,
            "nodeInfo": {
                "architecture": "amd64",
                "operatingSystem": "linux",
                "kubeletVersion": "fake",
                "kubeProxyVersion": "fake",
            },
        },
    }


def gpu_nodes(pools: tuple[GpuPool, ...] = DEFAULT_POOLS) -> list[dict[str, Any]]:
    return [gpu_node(pool, index) for pool in pools for index in range(pool.count)]


def is_ready(node: dict[str, Any]) -> bool:
    """Ready, and the node lifecycle controller has lifted its not-ready taint."""
    conditions = node.get("status", {}).get("conditions", [])
    lifecycle_taints = [t for t in node["spec"].get("taints", []) if t["key"].startswith("node.kubernetes.io/")]
    return not lifecycle_taints and any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
