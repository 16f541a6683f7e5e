"""Every workflow the API server admits renders children the API server admits.

Workflows are generated from the CRD's own schema (hypothesis-jsonschema, seeded and
bounded), created with `dryRun=All` on the real API server (which applies the schema, the
CEL rules and the defaults), rendered with the operator's render functions, and every
child is server-side applied with `dryRun=All`: none may be refused. A workflow that
fails becomes a regression case in `REGRESSIONS` below.
"""
from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema
from kubernetes.client import ApiClient

from swiftdiffusion.operator import crd, kube, render
from swiftdiffusion.operator import model as m
from tests.reconcile.fixtures import WORKFLOWS

pytestmark = pytest.mark.cluster

EXAMPLES = 300
DRY_RUN = {"dryRun": "All"}
# Found by earlier runs of this test or by users (each was admitted and then refused in a child
# before the CRD learned to refuse it): kept so the classes stay closed.
REGRESSIONS: list[dict[str, Any]] = [
    {"base": {"model": "m"}, "basePool": {"podLabels": {"a": "b c"}}},
    {"base": {"model": "m"}, "basePool": {"resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}}},
    {"base": {"model": "m"}, "basePool": {"tolerations": [{"operator": "Equal", "value": "v"}]}},
    {"base": {"model": "m"}, "basePool": {"podLabels": {"swiftdiffusion.io/pool": "other"}}},
    {"base": {"model": "m"}, "basePool": {"gpuProducts": ["NVIDIA H800"]}},
]
# Admitted workflows that once rendered refused children (the operator was fixed, not the CRD).
ADMITTED_EDGES: list[dict[str, Any]] = [
    {"base": {"model": "org/model-\U0001f600"}, "controlnets": [{"name": "c", "model": "\U00085795\x9f"}]},
]


def generatable(schema: Any) -> Any:
    """The CRD's spec schema as plain JSON Schema: Kubernetes' extensions and formats dropped
    (CEL rules are the API server's job; generated workflows that break them are skipped)."""
    if isinstance(schema, dict):
        return {key: generatable(value) for key, value in schema.items()
                if not key.startswith("x-kubernetes-") and key not in ("format", "default", "description")}
    if isinstance(schema, list):
        return [generatable(item) for item in schema]
    return schema


SPEC_SCHEMA = generatable(crd.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"])


class Outcome:
    """What the run saw, so the test can insist it really exercised admitted workflows."""

    def __init__(self) -> None:
        self.admitted = self.refused_by_crd = 0
        self.failures: list[str] = []


def admitted(api: ApiClient, namespace: str, spec: dict[str, Any]) -> dict[str, Any] | None:
    body = {"apiVersion": f"{m.GROUP}/{m.VERSION}", "kind": m.KIND, "metadata": {"name": "generated"},
            "spec": copy.deepcopy(spec)}
    try:
        return kube.request(api, "POST", WORKFLOWS.format(ns=namespace), body=body, query=DRY_RUN)
    except kube.ApiException as error:
        if error.status in (400, 422):
            return None
        raise


def refused_children(api: ApiClient, workflow: dict[str, Any]) -> list[str]:
    wf = m.Workflow.from_body(workflow)
    manifests = render.render_workflow(wf)
    if wf.shared_pool:
        manifests += render.render_shared_pool(wf.shared_pool, [wf])
    refused = []
    for manifest in manifests:
        meta = manifest["metadata"]
        path = kube.object_path(manifest["apiVersion"], manifest["kind"], meta["namespace"], meta["name"])
        try:
            kube.request(api, "PATCH", path, body=manifest, content_type="application/apply-patch+yaml",
                         query={"fieldManager": render.FIELD_MANAGER, "force": "true", **DRY_RUN})
        except kube.ApiException as error:
            refused.append(f"{manifest['kind']}/{meta['name']}: {error.status} {error.body}")
    return refused


def check(api: ApiClient, namespace: str, spec: dict[str, Any], outcome: Outcome) -> None:
    workflow = admitted(api, namespace, spec)
    if workflow is None:
        outcome.refused_by_crd += 1
        return
    outcome.admitted += 1
    if refused := refused_children(api, workflow):
        outcome.failures.append(f"spec {spec}:\n  " + "\n  ".join(refused))


@pytest.mark.parametrize("spec", REGRESSIONS)
def test_regressions_are_refused_at_the_door(t2i_crd: str, k8s_client: ApiClient, namespace: str,
                                             spec: dict[str, Any]) -> None:
    assert admitted(k8s_client, namespace, spec) is None


def test_admitted_workflows_render_admitted_children(t2i_crd: str, k8s_client: ApiClient, namespace: str) -> None:
    outcome = Outcome()

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.one_of(from_schema(SPEC_SCHEMA), st.sampled_from(REGRESSIONS + ADMITTED_EDGES)))
    def run(spec: dict[str, Any]) -> None:
        check(k8s_client, namespace, spec, outcome)

    run()
    assert not outcome.failures, f"{len(outcome.failures)} admitted workflows render refused children:\n" + \
        "\n".join(outcome.failures[:5])
    assert outcome.admitted >= EXAMPLES // 3, f"only {outcome.admitted} of {EXAMPLES} generated workflows admitted"
