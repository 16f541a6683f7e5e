"""Least privilege, proven on the test bed with the chart as users install it.

What the chart grants its ServiceAccount (the API server's own answer, as `kubectl auth
can-i --list` asks it) is compared with what the operator really requested during a run
through every code path, read from the test bed's audit log. The other direction: each
verb the reconcile needs, removed from the chart's rules, makes the operator name the
forbidden verb and resource (in the workflow's Ready condition, or its log when the
workflow cannot be read or its status written) instead of reaching Ready; events and pod
listing only inform, so their refusal is logged and counted while workflows become Ready.
"""
from __future__ import annotations

import json
import pathlib
import shutil
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from kubernetes import config
from kubernetes.client import ApiClient

from swiftdiffusion.operator import autoscaling, generate, kube, rbac, render
from swiftdiffusion.operator import model as m
from swiftdiffusion.operator.local_process import LocalOperator
from tests.chart.helm import CHART, Helm
from tests.reconcile.fixtures import Cluster, token_kubeconfig, wait_until
from tests.reconcile.workflows import CANNY, example
from tests.testbed import components
from tests.testbed.fixtures import EXISTING_CLUSTER_ENV

pytestmark = pytest.mark.cluster
Grant = tuple[str, str, str]  # (API group, resource or resource/subresource, verb)
FINALIZERS = (m.GROUP, f"{m.PLURAL}/finalizers", "update")
AUTOSCALED = {"enabled": True, "minReplicas": 1, "maxReplicas": 2}


def grants(rules: list[dict[str, Any]]) -> set[Grant]:
    return {(group, resource, verb) for rule in rules for group in rule.get("apiGroups", [])
            for resource in rule.get("resources", []) for verb in rule["verbs"]}


def granted(kubeconfig: str, namespace: str) -> set[Grant]:
    """What the API server lets the kubeconfig's user do in `namespace` (a SelfSubjectRulesReview)."""
    with config.new_client_from_config(config_file=kubeconfig) as api:
        review = kube.request(api, "POST", "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews", body={
            "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectRulesReview",
            "spec": {"namespace": namespace}})
    assert not review["status"].get("incomplete"), review["status"].get("evaluationError")
    return grants(review["status"]["resourceRules"])


def requested(audit_log: pathlib.Path, user: str) -> tuple[set[Grant], list[str]]:
    """(group, resource, verb) of every API request `user` made, and those that were refused.

    A server-side apply that creates its object is a PATCH answered 201, which the API
    server authorizes as `create` too."""
    used, refused = set(), []
    for line in audit_log.read_text().splitlines():
        event = json.loads(line)
        ref = event.get("objectRef")
        if event["user"]["username"] != user or not ref:
            continue  # another client, or a non-resource URL (discovery, granted to everyone)
        grant = (ref.get("apiGroup", ""), ref["resource"] + (f"/{ref['subresource']}" if "subresource" in ref else ""),
                 event["verb"])
        used.add(grant)
        code = event.get("responseStatus", {}).get("code")
        if grant[2] == "patch" and code == 201:
            used.add((grant[0], grant[1], "create"))
        if code == 403:
            refused.append(event["requestURI"])
    return used, refused


def mount_fails(cluster: Cluster, pool: str) -> None:
    """A Ready pod of `pool` waits for a volume that cannot be mounted, written as a kubelet
    would (kwok's nodes mount nothing): its container waiting in ContainerCreating and a
    FailedMount event. Its phase stays Running: kwok would make a Pending pod Ready again."""
    pod = wait_until(lambda: next((p for p in cluster.pods(pool) if any(
        c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))), None))
    meta, container = pod["metadata"], pod["spec"]["containers"][0]
    waiting = {"name": container["name"], "image": container["image"], "imageID": "", "ready": False,
               "restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating"}, "running": None}}
    status = {"conditions": [{"type": "Ready", "status": "False"}], "containerStatuses": [waiting]}
    kube.request(cluster.api, "PATCH", f"/api/v1/namespaces/{cluster.namespace}/pods/{meta['name']}/status",
                 body={"status": status}, content_type="application/strategic-merge-patch+json")
    kube.request(cluster.api, "POST", f"/api/v1/namespaces/{cluster.namespace}/events", body={
        "apiVersion": "v1", "kind": "Event", "metadata": {"generateName": f"{meta['name']}."},
        "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": meta["name"], "namespace": cluster.namespace,
                           "uid": meta["uid"]},
        "reason": "FailedMount", "type": "Warning", "source": {"component": "kubelet"},
        "message": 'MountVolume.SetUp failed for volume "models" : hostPath type check failed: /data/models is not '
                   "a directory"})


def install(helm: Helm, kube_config: str, release: str, namespace: str, chart: pathlib.Path = CHART) -> str:
    """The chart, watching `namespace`, without waiting for its (kwok-run) operator pod:
    the tests run the operator themselves. Returns the ServiceAccount's name."""
    helm.run("install", release, str(chart), "--namespace", namespace, "--set",
             f"operator.watchNamespaces={{{namespace}}}", kube_config=kube_config)
    return f"{release}-swiftdiffusion"


def workflow(name: str, controlnets: tuple[dict[str, Any], ...] = (CANNY,), **spec: Any) -> dict[str, Any]:
    return {"apiVersion": f"{m.GROUP}/{m.VERSION}", "kind": m.KIND, "metadata": {"name": name},
            "spec": {"base": {"model": "stabilityai/stable-diffusion-xl-base-1.0"}, "controlnets": list(controlnets),
                     **spec}}


@pytest.fixture
def release(helm: Helm, kube_config: str, namespace: str) -> Iterator[str]:
    """A release name; uninstalled afterwards (its ClusterRole/Binding outlive the namespace)."""
    name = f"swd-{uuid.uuid4().hex[:6]}"
    yield name
    helm.run("uninstall", name, "--namespace", namespace, kube_config=kube_config, check=False)


def test_the_chart_grants_exactly_the_rules_and_the_operator_uses_every_grant(
    helm: Helm, kube_config: str, k8s_client: ApiClient, namespace: str, release: str, cluster: Cluster,
    tmp_path: pathlib.Path, keda_crds: list[str],
) -> None:
    """Beyond what every ServiceAccount may do (a fresh one with no binding is the baseline),
    the chart's account may do exactly `rbac.RULES`: no wildcard, no Secrets; and each of those
    grants was requested by the operator while it created, updated, shared, pruned and deleted
    pools, turned a pool's autoscaling on and off (KEDA's API served, no KEDA running) and
    explained a pod that cannot mount its volume (finalizers `update` is checked by admission
    on blockOwnerDeletion, never requested)."""
    account = install(helm, kube_config, release, namespace)
    kube.request(k8s_client, "POST", f"/api/v1/namespaces/{namespace}/serviceaccounts",
                 body={"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "nobody"}})
    kubeconfig = token_kubeconfig(k8s_client, kube_config, namespace, account, tmp_path / "operator.kubeconfig")
    nobody = token_kubeconfig(k8s_client, kube_config, namespace, "nobody", tmp_path / "nobody.kubeconfig")
    everyone = granted(nobody, namespace)  # e.g. SelfSubjectRulesReviews, as just made
    by_chart = granted(kubeconfig, namespace) - everyone
    assert by_chart == grants(rbac.RULES)
    assert not [g for g in by_chart if "*" in g or g[1].startswith("secrets")]

    audit_log = components.audit_log(pathlib.Path(kube_config).parent)
    if not audit_log.is_file():
        pytest.skip(f"no audit log of the test bed's (an existing cluster from ${EXISTING_CLUSTER_ENV}?)")

    operator = LocalOperator(namespace, kubeconfig, tmp_path / "operator.log").start()
    try:
        for doc in [*example("shared-pool"), workflow("solo", basePool={"autoscaling": AUTOSCALED})]:
            cluster.apply_workflow(doc)
        for name in ("product-shots", "character-poses", "solo"):
            cluster.wait_ready(name)
        wait_until(lambda: cluster.get(*autoscaling.TYPE, "swd-solo-base"))
        owners = [ref for child in cluster.children() for ref in child["metadata"]["ownerReferences"]]
        cluster.apply_workflow(workflow("solo", controlnets=()))
        wait_until(lambda: not cluster.get("apps/v1", "Deployment", "swd-solo-cn"))  # pruned by the operator
        wait_until(lambda: not cluster.get(*autoscaling.TYPE, "swd-solo-base"))  # autoscaling turned off
        cluster.wait_ready("solo")
        cluster.delete_workflow("character-poses")
        wait_until(lambda: cluster.get("apps/v1", "Deployment", "swd-cn-shared")["metadata"]["annotations"]
                   [render.SERVED_CONTROLNETS] == "canny,depth")
        mount_fails(cluster, render.base_pool_name("product-shots"))  # its pods' events are read
        wait_until(lambda: cluster.condition("product-shots").get("reason") == "VolumeMountFailed")
    finally:
        operator.stop()

    used, refused = requested(audit_log, f"system:serviceaccount:{namespace}:{account}")
    assert not refused
    if any(ref.get("blockOwnerDeletion") and ref["kind"] == m.KIND for ref in owners):
        used.add(FINALIZERS)
    assert sorted(by_chart - used) == [], "granted but never used"
    assert sorted(used - by_chart - everyone) == [], "used but not granted by the chart"


def without(rules: list[dict[str, Any]], group: str, resource: str, verb: str) -> list[dict[str, Any]]:
    """The rules with `verb` taken from `resource` (split off the rule it shares with others)."""
    out = []
    for rule in rules:
        if group not in rule["apiGroups"] or resource not in rule["resources"] or verb not in rule["verbs"]:
            out.append(rule)
            continue
        others = [r for r in rule["resources"] if r != resource]
        if others:
            out.append({**rule, "resources": others})
        verbs = [v for v in rule["verbs"] if v != verb]
        if verbs:
            out.append({**rule, "resources": [resource], "verbs": verbs})
    assert grants(out) == grants(rules) - {(group, resource, verb)}
    return out


def chart_without(tmp_path: pathlib.Path, group: str, resource: str, verb: str) -> pathlib.Path:
    """A copy of the chart whose generated rules file lacks one verb."""
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    rules = chart / "files" / "rbac-rules.yaml"
    rules.write_text(generate.HEADER + yaml.safe_dump(without(rbac.RULES, group, resource, verb), sort_keys=False))
    return chart


# The verbs each step of a reconcile needs; where the operator reports a refusal, and whether
# the workflow can still become Ready without it (events and a pending pool's diagnosis only
# inform: the refusal is logged and counted in swiftdiffusion_operator_reconcile_errors_total).
# None: either may happen (without watch, kopf still reconciles what its first LIST returned,
# and may get there before the refused WATCH stops it).
CONDITION, LOG = "Ready condition", "operator log"
NEEDED = [
    pytest.param("", "configmaps", "get", CONDITION, True, id="read-a-child"),
    pytest.param("apps", "deployments", "create", CONDITION, True, id="create-a-child"),
    pytest.param("", "services", "patch", CONDITION, True, id="apply-a-child"),
    pytest.param("networking.k8s.io", "networkpolicies", "delete", CONDITION, True, id="prune-a-child"),
    pytest.param(m.GROUP, f"{m.PLURAL}/finalizers", "update", CONDITION, True, id="own-a-child"),
    pytest.param(m.GROUP, f"{m.PLURAL}/status", "patch", LOG, True, id="write-status"),
    pytest.param(m.GROUP, m.PLURAL, "get", LOG, True, id="read-the-workflow"),
    pytest.param(m.GROUP, m.PLURAL, "watch", LOG, None, id="watch-workflows"),
    pytest.param("", "events", "create", LOG, False, id="post-an-event"),
    pytest.param("", "pods", "list", LOG, False, id="diagnose-a-pool"),
    pytest.param("", "events", "list", LOG, False, id="diagnose-a-volume"),
]


def refusal(group: str, resource: str, verb: str) -> str:
    """The API server's words for the refusal."""
    if resource.endswith("/finalizers"):  # refused by OwnerReferencesPermissionEnforcement, which names no resource
        return "cannot set blockOwnerDeletion if an ownerReference refers to a resource you can't set finalizers on"
    return f'cannot {verb} resource "{resource}" in API group "{group}"'


@pytest.mark.parametrize("group, resource, verb, where, blocks_ready", NEEDED)
def test_a_verb_removed_from_the_charts_rules_is_reported_naming_it(
    helm: Helm, kube_config: str, k8s_client: ApiClient, namespace: str, release: str, cluster: Cluster,
    tmp_path: pathlib.Path, group: str, resource: str, verb: str, where: str, blocks_ready: bool | None,
) -> None:
    account = install(helm, kube_config, release, namespace, chart_without(tmp_path, group, resource, verb))
    kubeconfig = token_kubeconfig(k8s_client, kube_config, namespace, account, tmp_path / "operator.kubeconfig")
    operator = LocalOperator(namespace, kubeconfig, tmp_path / "operator.log").start()
    # Pods are listed only while a pool is not rolled out: for that case, one that never schedules.
    pending = {"basePool": {"gpuProducts": ["NO-SUCH-GPU"]}} if resource == "pods" else {}
    try:
        cluster.apply_workflow(workflow("wf", **pending))
        if verb == "delete":  # only a pool the workflow stops using is deleted
            cluster.wait_ready("wf")
            cluster.apply_workflow(workflow("wf", controlnets=()))
        if (resource, verb) == ("events", "list"):  # read only for a pod waiting for its volumes
            cluster.wait_ready("wf")
            mount_fails(cluster, render.base_pool_name("wf"))

        def reported() -> bool:
            text = cluster.condition("wf").get("message", "") if where == CONDITION else operator.log_tail(200)
            assert refusal(group, resource, verb) in text, text
            return True

        wait_until(reported, timeout=30)
        errors = operator.total("swiftdiffusion_operator_reconcile_errors_total")
    finally:
        operator.stop()
    if blocks_ready:
        assert cluster.condition("wf").get("status") != "True", f"Ready without {verb} {resource}"
    elif blocks_ready is False:
        assert errors > 0
