"""NetworkPolicies of the runtime pools: who may open a connection to a pool's ports.

One policy per pool, named and owned like the pool's other objects, selecting its pods:
- a ControlNet pool's gRPC port answers only the base pools of the workflows that use it
  (every member's, for a shared pool): residual requests from anywhere else are refused;
- a base pool's gRPC port answers its clients (default: every pod of its namespace);
- both pools' metrics port answers only the monitoring namespaces.
Only ingress is restricted. Enforcing the policies is the CNI's job (Calico, Cilium, ...);
with a CNI that does not, they change nothing.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from swiftdiffusion.operator import runtime_config as rc

API_VERSION, KIND = "networking.k8s.io/v1", "NetworkPolicy"
TYPE = (API_VERSION, KIND)
Peer = dict[str, Any]  # a NetworkPolicyPeer: podSelector, namespaceSelector and/or ipBlock
Selector = dict[str, Any]  # a LabelSelector: matchLabels and/or matchExpressions


def _monitoring() -> Selector:
    return {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}


def _same_namespace() -> list[Peer]:
    return [{"podSelector": {}}]


@dataclass(frozen=True)
class Settings:
    """The operator's switch and the two selectors users choose (--network-policies and friends)."""

    enabled: bool = True
    monitoring_namespaces: Selector = field(default_factory=_monitoring)
    base_clients: list[Peer] = field(default_factory=_same_namespace)


DEFAULT = Settings()


def pods_of(label: str, values: Sequence[str]) -> Peer:
    """Pods of this namespace whose `label` is one of `values`."""
    return {"podSelector": {"matchExpressions": [{"key": label, "operator": "In", "values": sorted(set(values))}]}}


def policy(metadata: dict[str, Any], pods: Selector, grpc_from: Sequence[Peer], settings: Settings) -> dict[str, Any]:
    """Ingress to `pods`: gRPC from `grpc_from`, metrics from the monitoring namespaces."""
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": metadata, "spec": {
        "podSelector": pods,
        "policyTypes": ["Ingress"],
        "ingress": [
            {"from": list(grpc_from), "ports": [{"protocol": "TCP", "port": rc.GRPC_PORT}]},
            {"from": [{"namespaceSelector": settings.monitoring_namespaces}],
             "ports": [{"protocol": "TCP", "port": rc.METRICS_PORT}]},
        ],
    }}
