"""The Argo CD health check on workflows the real operator reports on, on the test bed.

Drives workflows through every health status the check knows, asserts the check's verdict
on each live object, and holds the checked-in testdata to the shape of what the operator
writes now. With SWIFTDIFFUSION_CAPTURE_ARGOCD_TESTDATA=1 it (re)writes the testdata from
these live objects instead of comparing shapes.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, watch

from swiftdiffusion.operator import kube
from swiftdiffusion.operator import model as m
from swiftdiffusion.operator.local_process import LocalOperator
from tests.gitops.argocd import (
    CM_KEY,
    CM_PATCH,
    CUSTOMIZATION,
    HEALTH_LUA,
    health_cases,
    load_testdata,
    run_health,
    status_shape,
    trim,
)
from tests.reconcile.fixtures import Cluster, wait_until
from tests.reconcile.workflows import CANNY
from tests.testbed import processes

pytestmark = pytest.mark.cluster

CAPTURE_ENV = "SWIFTDIFFUSION_CAPTURE_ARGOCD_TESTDATA"
BASE_MODEL = "stabilityai/stable-diffusion-xl-base-1.0"
NO_SUCH_GPU = "NVIDIA-A100-SXM4-80GB"  # no test bed node has it: the pool's pods never schedule


def _workflow(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "swiftdiffusion.io/v1alpha1", "kind": "T2IWorkflow", "metadata": {"name": name},
            "spec": {"base": {"model": BASE_MODEL}, **spec}}


def _conditions(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in body.get("status", {}).get("conditions", [])}


def _when(cluster: Cluster, name: str, ctype: str, **fields: str) -> dict[str, Any]:
    """The workflow once its `ctype` condition has `fields`, at the current generation."""
    def check() -> dict[str, Any] | None:
        body = cluster.workflow(name)
        cond = _conditions(body).get(ctype, {})
        current = cond.get("observedGeneration") == body["metadata"]["generation"]
        return body if current and all(cond.get(k) == v for k, v in fields.items()) else None

    return wait_until(check, timeout=90)


def _first_status(cluster: Cluster, name: str, since: str) -> dict[str, Any]:
    """The first status the operator wrote after resourceVersion `since`. A watch delivers every
    version of the object, so this short-lived state (children applied, none rolled out yet)
    cannot be missed the way polling could miss it."""
    api = client.CustomObjectsApi(cluster.api)
    stream = watch.Watch()
    for event in stream.stream(api.list_namespaced_custom_object, m.GROUP, m.VERSION, cluster.namespace, m.PLURAL,
                               field_selector=f"metadata.name={name}", resource_version=since, timeout_seconds=60):
        if event["object"].get("status"):
            stream.stop()
            return event["object"]
    raise AssertionError(f"the operator wrote no status for {name} within 60 s")


def _applied_while_rolling_out(cluster: Cluster, state: Path, body: dict[str, Any],
                               attempts: int = 3) -> tuple[dict[str, Any], dict[str, Any]]:
    """The workflow as applied, and the first status the operator wrote for it while its pools
    still rolled out. A busy machine's operator writes it after kwok made the pods Ready, so
    the test bed's kwok (in `state`) is paused until then. On another cluster, where the first
    status came after the rollout, the workflow is deleted, its children let go, and it is
    applied again."""
    name = body["metadata"]["name"]
    seen = []
    for _ in range(attempts):
        with processes.paused(state, "kwok"):
            applied = cluster.apply_workflow(body)
            first = _first_status(cluster, name, applied["metadata"]["resourceVersion"])
        verdict = run_health(first)
        if verdict["status"] == "Progressing":
            return applied, first
        seen.append(f"{verdict}; conditions {_conditions(first)}")
        cluster.delete_workflow(name)
        uid = applied["metadata"]["uid"]  # the other workflows' children stay
        wait_until(lambda: kube.get(cluster.api, f"{m.GROUP}/{m.VERSION}", m.KIND, cluster.namespace, name) is None
                   and not [c for c in cluster.children()
                            if any(ref["uid"] == uid for ref in c["metadata"].get("ownerReferences", []))],
                   timeout=60)
    raise AssertionError(f"{name}: no first status was Progressing ({attempts} tries):\n" + "\n".join(seen))


def _lifecycle(cluster: Cluster, state: Path) -> dict[str, dict[str, Any]]:
    """One workflow from apply through rollout to Ready, edited, then scaled to zero; by testdata file."""
    scale = {"conditioningScale": 0.9}
    applied, rolling_out = _applied_while_rolling_out(cluster, state, _workflow("wf", controlnets=[CANNY]))
    live = {"testdata/progressing-no-status.yaml": applied, "testdata/progressing-rolling-out.yaml": rolling_out}
    live["testdata/healthy.yaml"] = cluster.wait_ready("wf")
    live["testdata/progressing-generation-lag.yaml"] = cluster.apply_workflow(
        _workflow("wf", controlnets=[{**CANNY, **scale}]))
    cluster.apply_workflow(_workflow("wf", controlnets=[{**CANNY, **scale}], basePool={"replicas": 0},
                                     controlnetPool={"replicas": 0}))
    live["testdata/suspended.yaml"] = cluster.wait_ready("wf")
    return live


def _past_progress_deadline(cluster: Cluster) -> dict[str, Any]:
    """A pool whose GPU product no node has, once its Deployment's progress deadline has passed
    (cut from 600 s to 1 s by hand; the operator does not own that field)."""
    wait_until(lambda: cluster.get("apps/v1", "Deployment", "swd-unschedulable-base"))
    path = kube.object_path("apps/v1", "Deployment", cluster.namespace, "swd-unschedulable-base")
    kube.request(cluster.api, "PATCH", path, body={"spec": {"progressDeadlineSeconds": 1}},
                 content_type="application/merge-patch+json")
    return _when(cluster, "unschedulable", "Degraded", status="True", reason="PoolFailing")


def _occupy_base_pool_name(cluster: Cluster, workflow: str) -> None:
    """A foreign Deployment under the base pool's name: its selector is immutable, so the
    API server refuses the operator's apply (the child refusal test_operator_cluster.py provokes)."""
    foreign = {"app": "foreign"}
    kube.request(cluster.api, "POST", f"/apis/apps/v1/namespaces/{cluster.namespace}/deployments", body={
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": f"swd-{workflow}-base"},
        "spec": {"replicas": 0, "selector": {"matchLabels": foreign}, "template": {
            "metadata": {"labels": foreign}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}})


def _stable(message: str) -> str:
    """A message without what a re-run may change while the status keeps its meaning: the
    suffix of ReplicaSet names (a hash of the pod template, which changes with anything
    rendered into a pod) and the ready counts of a rollout in flight (timing)."""
    message = re.sub(r'(ReplicaSet "[a-z0-9-]+)-[a-z0-9]{6,10}"', r'\1-<hash>"', message)
    return re.sub(r"\b\d+/\d+ ready\b", "<ready>/<desired> ready", message)


def _every_status(cluster: Cluster, state: Path) -> dict[str, dict[str, Any]]:
    """Live workflows in every state health_test.yaml names, by testdata file."""
    cluster.apply_workflow(_workflow("unschedulable", basePool={"gpuProducts": [NO_SUCH_GPU]}))
    _occupy_base_pool_name(cluster, "refused")
    cluster.apply_workflow(_workflow("refused"))
    live = _lifecycle(cluster, state)
    live["testdata/degraded-progress-deadline.yaml"] = _past_progress_deadline(cluster)
    live["testdata/degraded-refused-child.yaml"] = _when(cluster, "refused", "Degraded", status="True",
                                                         reason="ReconcileFailed")
    return live


def _dump(obj: dict[str, Any]) -> str:
    """YAML in the API server's field order, long messages kept on one line."""
    return yaml.safe_dump(obj, sort_keys=False, width=4096)


def test_health_check_verdicts_on_status_the_operator_writes(operator: LocalOperator, cluster: Cluster,
                                                            kube_config: str) -> None:
    live = _every_status(cluster, Path(kube_config).parent)  # a test bed keeps its state beside its kubeconfig
    cases = {case["inputPath"]: case["healthStatus"] for case in health_cases()}
    assert set(cases) == set(live), "health_test.yaml and the captured states must name the same testdata"
    capture = os.environ.get(CAPTURE_ENV) == "1"
    problems = []
    for input_path, body in live.items():
        if capture:
            (CUSTOMIZATION / input_path).write_text(_dump(trim(body)))
        elif status_shape(trim(body)) != status_shape(load_testdata(input_path)):
            problems.append(f"{input_path} is stale: re-capture with {CAPTURE_ENV}=1")
        verdict, expected = run_health(body), cases[input_path]
        if (verdict["status"], _stable(verdict["message"])) != (expected["status"], _stable(expected["message"])):
            problems.append(f"{input_path}: live object reads {verdict}, health_test.yaml expects {expected}")
    assert not problems, "\n".join(problems)


def test_the_argocd_cm_patch_adds_its_key_and_keeps_the_rest(cluster: Cluster) -> None:
    """The patch as `kubectl patch --type merge --patch-file` sends it, against an argocd-cm as
    Argo CD's install leaves it (its labels, a setting, another health check)."""
    path = f"/api/v1/namespaces/{cluster.namespace}/configmaps"
    labels = {"app.kubernetes.io/name": "argocd-cm", "app.kubernetes.io/part-of": "argocd"}
    data = {"url": "https://argocd.example.com",
            "resource.customizations.health.argoproj.io_Application": "hs = {}\nhs.status = 'Healthy'\nreturn hs\n"}
    kube.request(cluster.api, "POST", path, body={"apiVersion": "v1", "kind": "ConfigMap",
                                                  "metadata": {"name": "argocd-cm", "labels": labels}, "data": data})
    patched = kube.request(cluster.api, "PATCH", f"{path}/argocd-cm", body=yaml.safe_load(CM_PATCH.read_text()),
                           content_type="application/merge-patch+json")
    assert patched["metadata"]["labels"] == labels
    assert patched["data"] == {**data, CM_KEY: HEALTH_LUA.read_text()}
