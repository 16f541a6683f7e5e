"""The pools' NetworkPolicies on the real API server: accepted, created by the operator,
selecting the right pods (by the API server's own label-selector matching over the pods
kwok runs), updated when a shared pool's members change, and gone with their workflows.

The test bed has no CNI, so nothing enforces the policies here: these tests prove what the
policies select; enforcement is the CNI's job (tests/reconcile/test_netpol.py evaluates
who they admit).
"""
from __future__ import annotations

import pathlib
from typing import Any

import pytest
from kubernetes.client import ApiClient

from swiftdiffusion.operator import drift, kube, netpol, render
from swiftdiffusion.operator import model as m
from swiftdiffusion.operator.local_process import LocalOperator
from tests.reconcile.fixtures import Cluster, wait_until
from tests.reconcile.workflows import CANNY, DEPTH, example, workflow

pytestmark = pytest.mark.cluster

CUSTOM = netpol.Settings(
    monitoring_namespaces={"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In",
                                                 "values": ["monitoring", "observability"]}]},
    base_clients=[{"namespaceSelector": {"matchLabels": {"gateway": "yes"}},
                   "podSelector": {"matchLabels": {"app": "gateway"}}},
                  {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}])


def with_controlnets(name: str) -> dict[str, Any]:
    return {"apiVersion": f"{m.GROUP}/{m.VERSION}", "kind": m.KIND, "metadata": {"name": name},
            "spec": {"base": {"model": "stabilityai/stable-diffusion-xl-base-1.0"}, "controlnets": [CANNY]}}


def selector_string(selector: dict[str, Any]) -> str:
    """A LabelSelector as the `labelSelector` query parameter (In, NotIn, Exists, DoesNotExist)."""
    parts = [f"{key}={value}" for key, value in selector.get("matchLabels", {}).items()]
    for expr in selector.get("matchExpressions", []):
        key, values = expr["key"], ",".join(expr.get("values", []))
        parts.append({"In": f"{key} in ({values})", "NotIn": f"{key} notin ({values})", "Exists": key,
                      "DoesNotExist": f"!{key}"}[expr["operator"]])
    return ",".join(parts)


def pools_of_pods(cluster: Cluster, selector: dict[str, Any]) -> set[str]:
    """The pools whose running pods the API server matches with `selector` (never empty: pods must exist)."""
    pods = cluster.list("v1", "pods", selector_string(selector))
    assert pods, f"no pod matches {selector}"
    return {p["metadata"]["labels"][render.POOL_LABEL] for p in pods}


def policies(cluster: Cluster) -> dict[str, dict[str, Any]]:
    return {p["metadata"]["name"]: p for p in cluster.list(netpol.API_VERSION, "networkpolicies",
                                                           "app.kubernetes.io/managed-by=swiftdiffusion-operator")}


def test_the_api_server_accepts_every_rendered_policy_and_serves_back_what_was_applied(
        k8s_client: ApiClient, namespace: str) -> None:
    """Server-side dry run of default and custom policies; the served object still contains the
    manifest, so the operator's next reconcile writes nothing."""
    a = workflow("a", namespace, controlnets=[CANNY], controlnetPool={"sharedPoolName": "p"})
    b = workflow("b", namespace, controlnets=[DEPTH], controlnetPool={"sharedPoolName": "p"})
    rendered = []
    for settings in (netpol.DEFAULT, CUSTOM):
        manifests = [*render.render_workflow(a, settings), *render.render_workflow(workflow("c", namespace,
                     controlnets=[CANNY]), settings), *render.render_shared_pool("p", [a, b], settings)]
        rendered += [x for x in manifests if x["kind"] == netpol.KIND]
    assert len(rendered) == 8
    for manifest in rendered:
        path = kube.object_path(netpol.API_VERSION, netpol.KIND, namespace, manifest["metadata"]["name"])
        served = kube.request(k8s_client, "PATCH", path, body=manifest, content_type=kube.APPLY_PATCH,
                              query={"fieldManager": render.FIELD_MANAGER, "force": "true", "dryRun": "All"})
        assert drift.contains(manifest, served), manifest["metadata"]["name"]
    assert not kube.request(k8s_client, "GET", kube.collection_path(netpol.API_VERSION, netpol.KIND, namespace))["items"]


def test_the_operator_writes_policies_selecting_each_pools_pods_and_callers_and_they_go_with_the_workflows(
        operator: LocalOperator, cluster: Cluster) -> None:
    for doc in [*example("shared-pool"), with_controlnets("solo")]:
        cluster.apply_workflow(doc)
    for name in ("product-shots", "character-poses", "solo"):
        cluster.wait_ready(name)
    live = policies(cluster)
    assert set(live) == {"swd-product-shots-base", "swd-character-poses-base", "swd-solo-base", "swd-solo-cn",
                         "swd-cn-shared"}
    for name, policy in live.items():
        assert pools_of_pods(cluster, policy["spec"]["podSelector"]) == {name}
        metrics = policy["spec"]["ingress"][1]
        assert metrics["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    shared_callers = live["swd-cn-shared"]["spec"]["ingress"][0]["from"]
    assert pools_of_pods(cluster, shared_callers[0]["podSelector"]) == {"swd-product-shots-base",
                                                                        "swd-character-poses-base"}
    solo_callers = live["swd-solo-cn"]["spec"]["ingress"][0]["from"]
    assert pools_of_pods(cluster, solo_callers[0]["podSelector"]) == {"swd-solo-base"}
    assert live["swd-solo-base"]["spec"]["ingress"][0]["from"] == [{"podSelector": {}}]

    cluster.delete_workflow("character-poses")  # the shared pool's callers shrink to the remaining member
    wait_until(lambda: pools_of_pods(cluster, policies(cluster)["swd-cn-shared"]["spec"]["ingress"][0]["from"][0]
                                     ["podSelector"]) == {"swd-product-shots-base"})
    for name in ("product-shots", "solo"):
        cluster.delete_workflow(name)
    wait_until(lambda: not policies(cluster), timeout=90)  # the garbage collector follows the owner references


def test_switched_off_the_operator_deletes_its_policies_and_leaves_the_pools_alone(
        operator: LocalOperator, cluster: Cluster, tmp_path: pathlib.Path) -> None:
    cluster.apply_workflow(with_controlnets("wf"))
    cluster.wait_ready("wf")
    assert set(policies(cluster)) == {"swd-wf-base", "swd-wf-cn"}
    deployments = {d["metadata"]["name"]: d["metadata"]["generation"] for d in cluster.list("apps/v1", "deployments")}
    operator.stop()
    off = LocalOperator(cluster.namespace, operator.kubeconfig, tmp_path / "off.log",
                        args=("--no-network-policies",)).start()
    try:
        wait_until(lambda: not policies(cluster))
        cluster.wait_ready("wf")
    finally:
        off.stop()
    assert {d["metadata"]["name"]: d["metadata"]["generation"] for d in cluster.list("apps/v1", "deployments")} \
        == deployments
