"""The chart installs on the real test bed: CRD, RBAC and a running operator Deployment."""
from __future__ import annotations

import pathlib
import uuid
from collections.abc import Iterator

import pytest
import yaml
from kubernetes import client, dynamic

from swiftdiffusion.operator import model as m
from swiftdiffusion.operator import rbac
from swiftdiffusion.operator.local_process import LocalOperator
from tests.chart.helm import CHART, GPU_TOLERATION, Helm
from tests.reconcile.fixtures import Cluster, token_kubeconfig
from tests.reconcile.workflows import CANNY

pytestmark = pytest.mark.cluster
CRD_NAME = f"{m.PLURAL}.{m.GROUP}"


@pytest.fixture
def release(helm: Helm, kube_config: str, namespace: str) -> Iterator[str]:
    """A release name; uninstalled afterwards (its ClusterRole/Binding outlive the namespace)."""
    name = f"swd-{uuid.uuid4().hex[:6]}"
    yield name
    helm.run("uninstall", name, "--namespace", namespace, "--wait", kube_config=kube_config, check=False)


def test_helm_install_creates_the_crd_and_runs_the_operator_under_the_generated_rules(
    helm: Helm, kube_config: str, k8s_client: client.ApiClient, namespace: str, release: str
) -> None:
    sets = [arg for value in (*GPU_TOLERATION, f"operator.watchNamespaces={{{namespace}}}") for arg in ("--set", value)]
    notes = helm.run("install", release, str(CHART), "--namespace", namespace, "--wait", "--timeout", "120s",
                     *sets, kube_config=kube_config).stdout
    assert f"watching namespaces {namespace}." in notes
    crd = client.ApiextensionsV1Api(k8s_client).read_custom_resource_definition(CRD_NAME)
    assert any(c.type == "Established" and c.status == "True" for c in crd.status.conditions)
    role = client.RbacAuthorizationV1Api(k8s_client).read_cluster_role(f"{release}-swiftdiffusion")
    assert [k8s_client.sanitize_for_serialization(r) for r in role.rules] == rbac.RULES
    deployment = client.AppsV1Api(k8s_client).read_namespaced_deployment(f"{release}-swiftdiffusion", namespace)
    assert deployment.status.available_replicas == 1
    assert f"--namespace={namespace}" in deployment.spec.template.spec.containers[0].args
    core = client.CoreV1Api(k8s_client)
    config_map = core.read_namespaced_config_map(f"{release}-swiftdiffusion-dashboard", namespace)
    assert config_map.metadata.labels["grafana_dashboard"] == "1"


def test_the_api_server_accepts_the_crd_and_every_rendered_object_in_a_server_side_dry_run(
    helm: Helm, k8s_client: client.ApiClient, namespace: str
) -> None:
    dyn = dynamic.DynamicClient(k8s_client)
    crd = yaml.safe_load((CHART / "crds" / "t2iworkflows.yaml").read_text())
    objects = [crd, *helm.template("operator.watchNamespaces={a,b}", "metrics.service.type=NodePort",
                                   "podAnnotations.team=ml", "priorityClassName=system-cluster-critical",
                                   "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
                                   ".nodeSelectorTerms[0].matchExpressions[0].key=kubernetes.io/os",
                                   "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
                                   ".nodeSelectorTerms[0].matchExpressions[0].operator=Exists",
                                   f"dashboard.namespace={namespace}", release="dry-run", namespace=namespace)]
    for obj in objects:
        resource = dyn.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
        applied = resource.server_side_apply(body=obj, namespace=obj["metadata"].get("namespace"),
                                             field_manager="chart-test", dry_run="All")
        assert applied.metadata.name == obj["metadata"]["name"]
    persisted = client.CoreV1Api(k8s_client).list_namespaced_config_map(
        namespace, label_selector="app.kubernetes.io/instance=dry-run")
    assert not persisted.items, "a dry run persisted objects"


@pytest.mark.parametrize("namespaced", [False, True], ids=["cluster-role", "namespaced-role"])
def test_the_operator_reconciles_to_ready_as_the_charts_own_service_account(
    helm: Helm, kube_config: str, k8s_client: client.ApiClient, namespace: str, release: str, cluster: Cluster,
    tmp_path: pathlib.Path, namespaced: bool,
) -> None:
    """Installed as users install it: the operator authenticates with a token of the chart's
    ServiceAccount, so the chart's RBAC (ClusterRole, or a Role per watched namespace) is
    what it runs under."""
    values = (*GPU_TOLERATION, f"operator.watchNamespaces={{{namespace}}}", f"rbac.namespaced={str(namespaced).lower()}")
    helm.run("install", release, str(CHART), "--namespace", namespace, "--wait", "--timeout", "120s",
             *[arg for value in values for arg in ("--set", value)], kube_config=kube_config)
    account = f"{release}-swiftdiffusion"
    roles = client.RbacAuthorizationV1Api(k8s_client)
    if namespaced:
        role = roles.read_namespaced_role(account, namespace)
        assert [k8s_client.sanitize_for_serialization(r) for r in role.rules] == rbac.RULES
        assert not [r for r in roles.list_cluster_role().items if r.metadata.name == account]
    kubeconfig = token_kubeconfig(k8s_client, kube_config, namespace, account, tmp_path / "chart-sa.kubeconfig")
    operator = LocalOperator(namespace, kubeconfig, tmp_path / "operator.log").start()
    try:
        cluster.apply_workflow({"apiVersion": f"{m.GROUP}/{m.VERSION}", "kind": m.KIND, "metadata": {"name": "wf"},
                                "spec": {"base": {"model": "stabilityai/stable-diffusion-xl-base-1.0"},
                                         "controlnets": [CANNY]}})
        cluster.wait_ready("wf")
    finally:
        operator.stop()
    assert "Forbidden" not in operator.log_tail(200)


def test_namespaced_rbac_without_watched_namespaces_is_refused(helm: Helm) -> None:
    result = helm.run("template", "swd", str(CHART), "--set", "rbac.namespaced=true", check=False)
    assert result.returncode != 0 and "rbac.namespaced needs operator.watchNamespaces" in result.stderr
