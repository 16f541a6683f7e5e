"""The operator's least-privilege RBAC, written once: deploy/operator/rbac.yaml and the
Helm chart are both generated from RULES, and the cluster tests run the operator under it.

Why each verb: children are applied with server-side apply (`patch`; `create` because an
apply that creates is authorized as a create too) and read back (`get`) to skip applies
that would change nothing; kopf watches (`list`, `watch`) the workflows and the children;
`delete` removes a pool its owners no longer want (a workflow that drops its ControlNets,
the last member leaving a shared pool; owner references cover deleted workflows); status is
patched through its subresource; owner references with blockOwnerDeletion need `update` on
the workflows' finalizers (OwnerReferencesPermissionEnforcement admission); core/v1 events
explain what the operator did; a pool that is not ready has its pods listed so status can
say why (unschedulable, image pull, crash loop, probes), and the events of pods still waiting
for their containers (`list`: a volume that cannot be mounted is in the kubelet's FailedMount
events, not in pod status); a pool with autoscaling on gets a KEDA ScaledObject (applied,
read back for its status, deleted when autoscaling is turned off; not watched, so no
list/watch). Workflows and pods are read-only to the operator, and it cannot touch
Secrets. tests/chart/test_rbac_cluster.py proves each grant is used (the test bed's audit
log) and a needed verb removed is reported.
"""
from __future__ import annotations

from typing import Any

from swiftdiffusion.operator import model as m

NAME = "swiftdiffusion-operator"
CHILD_VERBS = ["get", "list", "watch", "create", "patch", "delete"]

RULES: list[dict[str, Any]] = [
    {"apiGroups": [m.GROUP], "resources": [m.PLURAL], "verbs": ["get", "list", "watch"]},
    {"apiGroups": [m.GROUP], "resources": [f"{m.PLURAL}/status"], "verbs": ["patch"]},
    {"apiGroups": [m.GROUP], "resources": [f"{m.PLURAL}/finalizers"], "verbs": ["update"]},
    {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": CHILD_VERBS},
    {"apiGroups": [""], "resources": ["services", "configmaps"], "verbs": CHILD_VERBS},
    {"apiGroups": ["policy"], "resources": ["poddisruptionbudgets"], "verbs": CHILD_VERBS},
    {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": CHILD_VERBS},
    {"apiGroups": ["keda.sh"], "resources": ["scaledobjects"], "verbs": ["get", "create", "patch", "delete"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "list"]},
]


def cluster_role(name: str = NAME) -> dict[str, Any]:
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": name}, "rules": RULES}


def manifests(namespace: str = "swiftdiffusion-system", name: str = NAME) -> list[dict[str, Any]]:
    """ServiceAccount, ClusterRole and ClusterRoleBinding for an operator watching all namespaces."""
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": namespace}},
        cluster_role(name),
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": name},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
         "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}]},
    ]
