"""Pod Security admission "restricted" admits every pod the operator renders and the chart's
operator pod; a HostPath model store is the one documented exception (hostPath volumes are
outside even the "baseline" policy)."""
from __future__ import annotations

from typing import Any

import pytest
from kubernetes.client import ApiClient

from swiftdiffusion.operator import kube, render
from swiftdiffusion.operator import model as m
from tests.chart.helm import Helm, by_kind
from tests.reconcile.workflows import example

pytestmark = pytest.mark.cluster

EXAMPLES = ("sdxl-canny-depth", "sdxl-latent-parallel", "shared-pool")


@pytest.fixture
def restricted(k8s_client: ApiClient, namespace: str) -> str:
    labels = {f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "warn", "audit")}
    kube.request(k8s_client, "PATCH", f"/api/v1/namespaces/{namespace}", body={"metadata": {"labels": labels}},
                 content_type="application/merge-patch+json")
    return namespace


def pod_templates(namespace: str, spec_overrides: dict[str, Any] | None = None) -> list[tuple[str, dict[str, Any]]]:
    """(Deployment name, pod template) for every pool the examples render, shared pools included."""
    out = []
    for name in EXAMPLES:
        for doc in example(name):
            body = {**doc, "metadata": {**doc["metadata"], "namespace": namespace, "uid": f"uid-{doc['metadata']['name']}"}}
            body["spec"] = {**body["spec"], **(spec_overrides or {})}
            wf = m.Workflow.from_body(body)
            manifests = render.render_workflow(wf)
            if wf.shared_pool:
                manifests += render.render_shared_pool(wf.shared_pool, [wf])
            out += [(mf["metadata"]["name"], mf["spec"]["template"]) for mf in manifests if mf["kind"] == "Deployment"]
    return out


def admit_pod(api: ApiClient, namespace: str, name: str, template: dict[str, Any]) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {**template["metadata"], "name": name},
           "spec": template["spec"]}
    kube.request(api, "POST", f"/api/v1/namespaces/{namespace}/pods", body=pod, query={"dryRun": "All"})


def test_every_rendered_pool_pod_is_admitted_by_the_restricted_policy(k8s_client: ApiClient, restricted: str) -> None:
    templates = pod_templates(restricted)
    assert len(templates) >= 5, "base, ControlNet, latent-parallel and shared pools"
    refused = []
    for name, template in templates:
        try:
            admit_pod(k8s_client, restricted, name, template)
        except kube.ApiException as error:
            refused.append(f"{name}: {error.body}")
    assert not refused, "\n".join(refused)


def test_a_host_path_model_store_is_refused_by_restricted_naming_the_volume(k8s_client: ApiClient,
                                                                             restricted: str) -> None:
    name, template = pod_templates(restricted, {"modelStore": {"type": "HostPath", "hostPath": "/data/models"}})[0]
    with pytest.raises(kube.ApiException) as caught:
        admit_pod(k8s_client, restricted, name, template)
    assert caught.value.status == 403 and "restricted" in caught.value.body and "hostPath" in caught.value.body


def test_the_charts_operator_pod_is_admitted_by_the_restricted_policy(k8s_client: ApiClient, restricted: str,
                                                                     helm: Helm) -> None:
    objects = helm.template(namespace=restricted)
    (account,) = by_kind(objects, "ServiceAccount")
    kube.request(k8s_client, "POST", f"/api/v1/namespaces/{restricted}/serviceaccounts", body=account)
    (deployment,) = by_kind(objects, "Deployment")
    admit_pod(k8s_client, restricted, "operator", deployment["spec"]["template"])
