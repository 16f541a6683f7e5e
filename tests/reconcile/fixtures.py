"""Fixtures for cluster tests of the operator: the CRD, and the real operator as a process.

Each test gets its own operator process watching only that test's namespace, running as
a ServiceAccount bound to the operator's generated RBAC rules, so every test also proves
those rules are enough. Stopping it is part of the fixture.
"""
from __future__ import annotations

import contextlib
import json
import pathlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from swiftdiffusion.operator import crd, kube, rbac, render
from swiftdiffusion.operator import model as m
from swiftdiffusion.operator.local_process import LocalOperator
from tests.testbed import build
from tests.testbed.waiting import eventually

WORKFLOWS = f"/apis/{m.GROUP}/{m.VERSION}/namespaces/{{ns}}/{m.PLURAL}"
TEST_ROLE = "swiftdiffusion-operator-under-test"
USER_MANAGER = "tests"
KEDA_CRDS = "keda-crds.yaml"  # written beside the test bed's binaries from the KEDA module


def server_side_apply(api: ApiClient, path: str, body: dict[str, Any], manager: str = USER_MANAGER) -> dict:
    return kube.request(api, "PATCH", path, body=body, query={"fieldManager": manager, "force": "true"},
                        content_type="application/apply-patch+yaml")


def install_crd(k8s_client: ApiClient) -> str:
    """The CRD (as generated into crds/), established, plus the operator's ClusterRole."""
    definition = crd.crd()
    name = definition["metadata"]["name"]
    path = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"
    server_side_apply(k8s_client, path, definition)
    server_side_apply(k8s_client, f"/apis/rbac.authorization.k8s.io/v1/clusterroles/{TEST_ROLE}",
                      rbac.cluster_role(TEST_ROLE))

    def established() -> bool:
        conditions = kube.request(k8s_client, "GET", path).get("status", {}).get("conditions", [])
        return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)

    eventually(established, timeout=60)
    eventually(lambda: kube.request(k8s_client, "GET", WORKFLOWS.format(ns="default")), timeout=30)
    return name


@pytest.fixture(scope="session")
def t2i_crd(k8s_client: ApiClient) -> Iterator[str]:
    yield install_crd(k8s_client)
    kube.request(k8s_client, "DELETE", f"/apis/rbac.authorization.k8s.io/v1/clusterroles/{TEST_ROLE}")


@pytest.fixture
def keda_crds(k8s_client: ApiClient) -> Iterator[list[str]]:
    """KEDA's CRDs (from the pinned KEDA module the test bed builds), removed afterwards so
    other tests see a cluster without KEDA. No KEDA controller runs: ScaledObjects stay
    unreconciled, as in a cluster whose KEDA is down."""
    crds = [doc for doc in yaml.safe_load_all((build.ensure_built() / KEDA_CRDS).read_text()) if doc]
    paths = [f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{c['metadata']['name']}" for c in crds]
    for crd_body, path in zip(crds, paths, strict=True):
        server_side_apply(k8s_client, path, crd_body)
    eventually(lambda: kube.api_served(k8s_client, "keda.sh/v1alpha1"), timeout=60)
    try:
        yield [c["metadata"]["name"] for c in crds]
    finally:
        delete_crds(k8s_client, paths, "keda.sh/v1alpha1")


def delete_crds(api: ApiClient, paths: list[str], api_version: str, timeout: float = 180) -> None:
    """Deletes CRDs and waits until `api_version` is no longer served.

    The API server's CRD finalizer retries a failed cleanup of the instances (a list refused
    while a fresh storage's watch cache initializes) with exponential back-off, so after a
    minute of failures its next try is minutes away. Any change to a terminating CRD queues
    it again at once: a waiting CRD gets a new annotation every few seconds."""
    for path in paths:
        kube.request(api, "DELETE", path)

    def gone() -> bool:
        if not kube.api_served(api, api_version):
            return True
        terminating = []
        for path in paths:
            with contextlib.suppress(ApiException):  # a 404: that one is gone
                crd_now = kube.request(api, "PATCH", path, body={"metadata": {"annotations": {
                    "tests.swiftdiffusion.io/requeued": str(time.time())}}}, content_type="application/merge-patch+json")
                terminating += [f"{crd_now['metadata']['name']}: {c.get('message')}"
                                for c in crd_now.get("status", {}).get("conditions", []) if c["type"] == "Terminating"]
        raise AssertionError("; ".join(terminating) or f"{api_version} still served")  # what eventually reports

    eventually(gone, timeout=timeout, interval=5)


def service_account_kubeconfig(api: ApiClient, admin_config: str, namespace: str, target: pathlib.Path) -> str:
    """A kubeconfig for a ServiceAccount bound (in `namespace` only) to the operator's rules."""
    sa = rbac.NAME
    server_side_apply(api, f"/api/v1/namespaces/{namespace}/serviceaccounts/{sa}",
                      {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": sa, "namespace": namespace}})
    server_side_apply(api, f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings/{sa}", {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": sa, "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": TEST_ROLE},
        "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": namespace}]})
    # The API server's authorizer learns of a new binding through its informers, later on a
    # busy machine: an operator started before would be refused its first writes (Forbidden,
    # retried minutes later). So wait until the rule the admission of owned children needs
    # is granted.
    review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": {
        "user": f"system:serviceaccount:{namespace}:{sa}",
        "groups": ["system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"],
        "resourceAttributes": {"namespace": namespace, "verb": "update", "group": m.GROUP,
                               "resource": m.PLURAL, "subresource": "finalizers"}}}
    eventually(lambda: kube.request(api, "POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews",
                                    body=review)["status"].get("allowed"), timeout=30, interval=0.2)
    return token_kubeconfig(api, admin_config, namespace, sa, target)


def token_kubeconfig(api: ApiClient, admin_config: str, namespace: str, account: str, target: pathlib.Path) -> str:
    """A kubeconfig that authenticates as an existing ServiceAccount (a bound token, as in a pod)."""
    token = kube.request(api, "POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token",
                         body={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                               "spec": {"expirationSeconds": 3600}})["status"]["token"]
    admin = yaml.safe_load(pathlib.Path(admin_config).read_text())
    cluster = admin["clusters"][0]
    config = {"apiVersion": "v1", "kind": "Config", "clusters": [cluster],
              "users": [{"name": account, "user": {"token": token}}],
              "contexts": [{"name": account, "context": {"cluster": cluster["name"], "user": account,
                                                         "namespace": namespace}}],
              "current-context": account}
    target.write_text(json.dumps(config))
    return str(target)


@contextlib.contextmanager
def running_operator(api: ApiClient, admin_config: str, namespace: str, folder: pathlib.Path,
                     args: tuple[str, ...] = ()) -> Iterator[LocalOperator]:
    """The operator, running as its least-privilege ServiceAccount, watching `namespace`;
    its log's tail is printed when it stops (pytest shows it for a failed test)."""
    kubeconfig = service_account_kubeconfig(api, admin_config, namespace, folder / "operator.kubeconfig")
    process = LocalOperator(namespace, kubeconfig, folder / "operator.log", args=args).start()
    try:
        yield process
    finally:
        process.stop()
        print(f"--- operator log tail ({namespace})\n{process.log_tail()}")


@pytest.fixture
def operator(t2i_crd: str, k8s_client: ApiClient, kube_config: str, namespace: str,
             tmp_path: pathlib.Path) -> Iterator[LocalOperator]:
    with running_operator(k8s_client, kube_config, namespace, tmp_path) as process:
        yield process


@dataclass
class Cluster:
    """Small helpers over the admin client for the tests' checks."""

    api: ApiClient
    namespace: str

    def apply_workflow(self, body: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply, as `kubectl apply --server-side` or a GitOps tool does."""
        body = {**body, "metadata": {**body["metadata"], "namespace": self.namespace}}
        path = WORKFLOWS.format(ns=self.namespace) + "/" + body["metadata"]["name"]
        return server_side_apply(self.api, path, body)

    def create_workflow(self, body: dict[str, Any]) -> dict[str, Any]:
        """A plain create, as `kubectl apply` (client-side) or `kubectl create` does for a new object."""
        body = {**body, "metadata": {**body["metadata"], "namespace": self.namespace}}
        return kube.request(self.api, "POST", WORKFLOWS.format(ns=self.namespace), body=body)

    def workflow(self, name: str) -> dict[str, Any]:
        return kube.request(self.api, "GET", WORKFLOWS.format(ns=self.namespace) + "/" + name)

    def delete_workflow(self, name: str) -> None:
        kube.request(self.api, "DELETE", WORKFLOWS.format(ns=self.namespace) + "/" + name)

    def get(self, api_version: str, kind: str, name: str) -> dict[str, Any] | None:
        return kube.get(self.api, api_version, kind, self.namespace, name)

    def list(self, api_version: str, plural: str, selector: str = "") -> list[dict[str, Any]]:
        prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        query = {"labelSelector": selector} if selector else None
        return kube.request(self.api, "GET", f"{prefix}/namespaces/{self.namespace}/{plural}", query=query)["items"]

    def children(self) -> list[dict[str, Any]]:
        """Every object the operator owns in the namespace, as `{"ref": "<plural>/<name>", **object}`."""
        selector = "app.kubernetes.io/managed-by=swiftdiffusion-operator"
        kinds = [(version, kube.PLURALS[kind]) for version, kind in render.POOL_KINDS]
        return [{"ref": f"{plural}/{item['metadata']['name']}", **item}
                for version, plural in kinds for item in self.list(version, plural, selector)]

    def condition(self, name: str, ctype: str = "Ready") -> dict[str, Any]:
        conditions = self.workflow(name).get("status", {}).get("conditions", [])
        return next((c for c in conditions if c["type"] == ctype), {})

    def wait_ready(self, name: str, timeout: float = 90) -> dict[str, Any]:
        """Waits for Ready=True at the workflow's current generation; returns the workflow."""
        def ready() -> dict[str, Any] | None:
            body = self.workflow(name)
            status = body.get("status", {})
            conditions = {c["type"]: c for c in status.get("conditions", [])}
            ok = conditions.get("Ready", {}).get("status") == "True" and \
                status.get("observedGeneration") == body["metadata"]["generation"]
            return body if ok else None

        return eventually(ready, timeout=timeout)

    def table(self, wide: bool = False) -> tuple[list[str], dict[str, list[Any]]]:
        """What `kubectl get t2i` prints: the server-side Table built from the CRD's printer columns."""
        table = kube.request(self.api, "GET", WORKFLOWS.format(ns=self.namespace),
                             accept="application/json;as=Table;v=v1;g=meta.k8s.io")
        shown = [i for i, c in enumerate(table["columnDefinitions"]) if wide or c["priority"] == 0]
        columns = [table["columnDefinitions"][i]["name"] for i in shown]
        return columns, {row["cells"][0]: [row["cells"][i] for i in shown] for row in table["rows"]}

    def pods(self, pool: str) -> list[dict[str, Any]]:
        return self.list("v1", "pods", f"swiftdiffusion.io/pool={pool}")

    def node(self, name: str) -> dict[str, Any]:
        return kube.request(self.api, "GET", f"/api/v1/nodes/{name}")


@pytest.fixture
def cluster(k8s_client: ApiClient, namespace: str) -> Cluster:
    return Cluster(k8s_client, namespace)


def wait_until(check: Callable[[], Any], timeout: float = 60) -> Any:
    return eventually(check, timeout=timeout, interval=0.3)


def settle(seconds: float = 2.0) -> None:
    """Gives the operator time to react to something it should ignore."""
    time.sleep(seconds)
