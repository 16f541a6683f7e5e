"""Who the rendered NetworkPolicies let in, evaluated as a NetworkPolicy implementation would.

The policies' selectors are evaluated against the labels of the pods the same render
produces (two workflows sharing a ControlNet pool, one with its own, one without), plus a
client pod, a Prometheus pod in the monitoring namespace and a pod of another namespace.
This proves the selectors; enforcing them is the CNI's job, and the test bed has no CNI
that does (tests/reconcile/test_netpol_cluster.py checks them with the API server).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from swiftdiffusion.operator import netpol, render
from swiftdiffusion.operator.main import parse_args
from swiftdiffusion.runtime.config import GRPC_PORT, METRICS_PORT
from tests.reconcile.workflows import CANNY, DEPTH, workflow

NS = "ns"
NAMESPACE_LABELS = {name: {"kubernetes.io/metadata.name": name, **extra} for name, extra in
                    ((NS, {}), ("monitoring", {}), ("other", {}), ("gateways", {"gateway": "true"}))}


@dataclass(frozen=True)
class Pod:
    name: str
    namespace: str
    labels: dict[str, str]


def matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """metav1.LabelSelector semantics: every matchLabels pair and every expression holds."""
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        key, values, present = expr["key"], expr.get("values", []), expr["key"] in labels
        held = {"In": present and labels.get(key) in values, "NotIn": labels.get(key) not in values,
                "Exists": present, "DoesNotExist": not present}[expr["operator"]]
        if not held:
            return False
    return True


def admits(policy: dict[str, Any], source: Pod, port: int) -> bool:
    """One policy's ingress rules for `port`: a peer without namespaceSelector means the policy's namespace."""
    for rule in policy["spec"]["ingress"]:
        if port not in [p["port"] for p in rule.get("ports", [])]:
            continue
        for peer in rule["from"]:
            namespace_ok = (matches(peer["namespaceSelector"], NAMESPACE_LABELS[source.namespace])
                            if "namespaceSelector" in peer else source.namespace == policy["metadata"]["namespace"])
            if namespace_ok and matches(peer.get("podSelector", {}), source.labels):
                return True
    return False


def selecting(policies: list[dict[str, Any]], target: Pod) -> list[dict[str, Any]]:
    return [p for p in policies if p["metadata"]["namespace"] == target.namespace
            and matches(p["spec"]["podSelector"], target.labels)]


def sources(policies: list[dict[str, Any]], target: Pod, pods: list[Pod], port: int) -> set[str]:
    """Who may connect to `target` on `port`: the union over every policy that selects it."""
    chosen = selecting(policies, target)
    assert chosen, f"{target.name} is selected by no policy, so it is open to all"
    return {p.name for p in pods if p != target and any(admits(policy, p, port) for policy in chosen)}


def fleet(settings: netpol.Settings = netpol.DEFAULT) -> tuple[list[dict[str, Any]], list[Pod]]:
    """Policies and pods of: a and b sharing ControlNet pool "p", c with its own pool, d without ControlNets."""
    a = workflow("a", controlnets=[CANNY], controlnetPool={"sharedPoolName": "p"})
    b = workflow("b", created="2026-01-02T00:00:00Z", controlnets=[DEPTH], controlnetPool={"sharedPoolName": "p"})
    c, d = workflow("c", controlnets=[CANNY]), workflow("d")
    manifests = [x for wf in (a, b, c, d) for x in render.render_workflow(wf, settings)]
    manifests += render.render_shared_pool("p", [a, b], settings)
    pods = [Pod(x["metadata"]["name"], NS, x["spec"]["template"]["metadata"]["labels"])
            for x in manifests if x["kind"] == "Deployment"]
    pods += [Pod("client", NS, {"app": "client"}), Pod("prometheus", "monitoring", {"app": "prometheus"}),
             Pod("intruder", "other", {"app": "client", **pods[0].labels}),
             Pod("gateway", "gateways", {"app": "gateway"})]
    return [x for x in manifests if x["kind"] == "NetworkPolicy"], pods


def pod(pods: list[Pod], name: str) -> Pod:
    return next(p for p in pods if p.name == name)


def test_every_pool_pod_is_selected_by_exactly_its_own_pools_policy() -> None:
    policies, pods = fleet()
    pool_pods = [p for p in pods if render.POOL_LABEL in p.labels and p.namespace == NS]
    assert {p.name for p in pool_pods} == {"swd-a-base", "swd-b-base", "swd-c-base", "swd-d-base", "swd-c-cn",
                                          "swd-cn-p"}
    for target in pool_pods:
        assert [x["metadata"]["name"] for x in selecting(policies, target)] == [target.name]
    assert not selecting(policies, pod(pods, "client"))


def test_a_controlnet_pool_answers_only_the_base_pools_of_the_workflows_that_use_it() -> None:
    policies, pods = fleet()
    assert sources(policies, pod(pods, "swd-cn-p"), pods, GRPC_PORT) == {"swd-a-base", "swd-b-base"}
    assert sources(policies, pod(pods, "swd-c-cn"), pods, GRPC_PORT) == {"swd-c-base"}


def test_base_pools_answer_every_pod_of_their_namespace_by_default() -> None:
    policies, pods = fleet()
    same_namespace = {p.name for p in pods if p.namespace == NS}
    for name in ("swd-a-base", "swd-d-base"):
        assert sources(policies, pod(pods, name), pods, GRPC_PORT) == same_namespace - {name}


def test_metrics_answer_only_the_monitoring_namespace_and_grpc_never_does() -> None:
    policies, pods = fleet()
    for target in (p for p in pods if render.POOL_LABEL in p.labels and p.namespace == NS):
        assert sources(policies, target, pods, METRICS_PORT) == {"prometheus"}
        assert "prometheus" not in sources(policies, target, pods, GRPC_PORT)


def test_configured_selectors_replace_the_defaults_and_leave_controlnet_callers_alone() -> None:
    settings = netpol.Settings(
        monitoring_namespaces={"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In",
                                                     "values": ["other"]}]},
        base_clients=[{"namespaceSelector": {"matchLabels": {"gateway": "true"}},
                       "podSelector": {"matchLabels": {"app": "gateway"}}}])
    policies, pods = fleet(settings)
    assert sources(policies, pod(pods, "swd-a-base"), pods, GRPC_PORT) == {"gateway"}
    assert sources(policies, pod(pods, "swd-cn-p"), pods, GRPC_PORT) == {"swd-a-base", "swd-b-base"}
    assert sources(policies, pod(pods, "swd-cn-p"), pods, METRICS_PORT) == {"intruder"}  # the pod in "other"


def test_a_member_leaving_a_shared_pool_loses_its_access() -> None:
    a = workflow("a", controlnets=[CANNY], controlnetPool={"sharedPoolName": "p"})
    (policy,) = [x for x in render.render_shared_pool("p", [a]) if x["kind"] == "NetworkPolicy"]
    assert policy["spec"]["ingress"][0]["from"] == [netpol.pods_of(render.POOL_LABEL, ["swd-a-base"])]
    assert {o["name"] for o in policy["metadata"]["ownerReferences"]} == {"a"}


def test_switched_off_no_policy_is_rendered() -> None:
    policies, _ = fleet(netpol.Settings(enabled=False))
    assert policies == []


def test_operator_flags_set_the_switch_and_selectors() -> None:
    assert parse_args([]).network_policies is True
    args = parse_args(["--no-network-policies", "--monitoring-namespace-selector", '{"matchLabels": {"team": "obs"}}',
                       "--base-pool-clients", '[{"namespaceSelector": {}}]'])
    assert (args.network_policies, args.monitoring_namespace_selector, args.base_pool_clients) == (
        False, {"matchLabels": {"team": "obs"}}, [{"namespaceSelector": {}}])


@pytest.mark.parametrize("flag, value", [("--monitoring-namespace-selector", "[]"), ("--base-pool-clients", "{}"),
                                         ("--base-pool-clients", "not json")])
def test_operator_refuses_a_selector_of_the_wrong_shape(flag: str, value: str,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_args([flag, value])
    assert exited.value.code == 2 and f"argument {flag}: invalid JSON" in capsys.readouterr().err
