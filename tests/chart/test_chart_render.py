"""`helm lint` and `helm template` of charts/swiftdiffusion, with defaults and overrides."""
from __future__ import annotations

import json
import re

import pytest
import yaml

from swiftdiffusion.operator import dashboard, netpol, rbac, render
from swiftdiffusion.operator.main import parse_args
from tests.chart.helm import CHART, GPU_TOLERATION, Helm, by_kind, one

STANDARD_LABELS = ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version",
                   "app.kubernetes.io/managed-by", "helm.sh/chart")


def container(objects: list[dict]) -> dict:
    (found,) = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    return found


def test_lint_passes_in_strict_mode(helm: Helm) -> None:
    out = helm.run("lint", "--strict", str(CHART)).stdout
    assert "1 chart(s) linted, 0 chart(s) failed" in out


@pytest.mark.parametrize("bad", ["image.pullPolicy=Sometimes", "operator.watchNamespaces[0]=Not_A_Namespace",
                                 "operator.metricsPort=0", "serviceMonitor.interval=often",
                                 "operator.wachNamespaces=x"])
def test_the_values_schema_rejects_invalid_values(helm: Helm, bad: str) -> None:
    result = helm.run("template", "swd", str(CHART), "--set", bad, check=False)
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr


def test_defaults_render_a_non_root_operator_with_liveness_probe_and_metrics_port(helm: Helm) -> None:
    objects = helm.template()
    assert sorted(o["kind"] for o in objects) == ["ClusterRole", "ClusterRoleBinding", "ConfigMap", "Deployment",
                                                  "Service", "ServiceAccount"]
    for obj in objects:
        assert set(STANDARD_LABELS) <= set(obj["metadata"]["labels"]), obj["kind"]
    c = container(objects)
    assert c["image"] == "swiftdiffusion/operator:0.1.0"
    assert c["args"][:3] == ["--liveness=http://0.0.0.0:8080/healthz", "--metrics-port=9090", "--workers=4"]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "liveness"}
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"liveness": 8080, "metrics": 9090}
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["runAsUser"] == 10001
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["serviceAccountName"] == one(objects, "ServiceAccount")["metadata"]["name"]
    service = one(objects, "Service")
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}]
    pod_labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()


def test_the_cluster_role_carries_exactly_the_operators_rbac_rules(helm: Helm) -> None:
    objects = helm.template(release="rbac-check", namespace="ops")
    role = one(objects, "ClusterRole")
    assert role["rules"] == rbac.RULES
    binding = one(objects, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"] == "rbac-check-swiftdiffusion"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "rbac-check-swiftdiffusion", "namespace": "ops"}]


def test_the_dashboard_config_map_holds_the_generated_dashboard_for_the_grafana_sidecar(helm: Helm) -> None:
    config_map = one(helm.template(), "ConfigMap")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(config_map["data"]["swiftdiffusion.json"]) == dashboard.dashboard()


def test_overrides_watch_listed_namespaces_and_move_ports_and_scheduling(helm: Helm) -> None:
    objects = helm.template("operator.watchNamespaces={team-a,team-b}", "operator.metricsPort=9191",
                            "operator.verbose=true", "image.tag=dev", "nodeSelector.pool=system",
                            "autoscaling.prometheusURL=http://prom.ops:9090", "autoscaling.pollingIntervalSeconds=5",
                            "resources.limits.cpu=1", "dashboard.enabled=false", *GPU_TOLERATION)
    c = container(objects)
    assert c["args"] == ["--liveness=http://0.0.0.0:8080/healthz", "--metrics-port=9191", "--workers=4",
                         "--namespace=team-a", "--namespace=team-b",
                         '--monitoring-namespace-selector={"matchLabels":{"kubernetes.io/metadata.name":"monitoring"}}',
                         '--base-pool-clients=[{"podSelector":{}}]', "--prometheus-url=http://prom.ops:9090",
                         "--autoscaling-polling-interval=5", "--verbose"]
    assert c["image"] == "swiftdiffusion/operator:dev"
    assert c["resources"]["limits"] == {"cpu": 1, "memory": "512Mi"}
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"pool": "system"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert one(objects, "Service")["spec"]["ports"][0]["port"] == 9191
    assert not by_kind(objects, "ConfigMap")


@pytest.mark.parametrize("values, expected", [
    ((), netpol.DEFAULT),
    (("networkPolicy.enabled=false",), netpol.Settings(enabled=False)),
    (("networkPolicy.monitoringNamespaceSelector.matchLabels.team=obs",
      "networkPolicy.baseClients[0].namespaceSelector.matchLabels.gateway=yes",
      "networkPolicy.baseClients[0].podSelector.matchLabels.app=gateway"),
     netpol.Settings(monitoring_namespaces={"matchLabels": {"kubernetes.io/metadata.name": "monitoring", "team": "obs"}},
                     base_clients=[{"namespaceSelector": {"matchLabels": {"gateway": "yes"}},
                                    "podSelector": {"matchLabels": {"app": "gateway"}}}])),
], ids=["defaults", "off", "custom"])
def test_network_policy_values_reach_the_operator_as_its_settings(helm: Helm, values: tuple[str, ...],
                                                                   expected: netpol.Settings) -> None:
    """The operator's own argument parser reads the Deployment's args back into the values' settings."""
    args = parse_args(container(helm.template(*values))["args"])
    assert netpol.Settings(args.network_policies, args.monitoring_namespace_selector,
                           args.base_pool_clients) == expected


def test_a_base_client_that_is_not_a_network_policy_peer_is_refused(helm: Helm) -> None:
    result = helm.run("template", "swd", str(CHART), "--set", "networkPolicy.baseClients[0].pods=x", check=False)
    assert result.returncode != 0 and "values don't meet the specifications of the schema" in result.stderr


def test_service_monitors_scrape_the_operator_and_label_runtime_pools_for_the_dashboard(helm: Helm) -> None:
    objects = helm.template("serviceMonitor.enabled=true", "serviceMonitor.labels.release=kube-prometheus-stack",
                            "serviceMonitor.interval=15s", "operator.watchNamespaces={team-a}")
    operator_monitor, pools_monitor = by_kind(objects, "ServiceMonitor")
    for monitor in (operator_monitor, pools_monitor):
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        assert monitor["spec"]["endpoints"][0]["interval"] == "15s"
    service_labels = one(objects, "Service")["metadata"]["labels"]
    assert operator_monitor["spec"]["selector"]["matchLabels"].items() <= service_labels.items()
    assert pools_monitor["spec"]["namespaceSelector"] == {"matchNames": ["team-a"]}
    assert pools_monitor["spec"]["selector"]["matchLabels"] == render.MANAGED_BY
    (relabel,) = pools_monitor["spec"]["endpoints"][0]["relabelings"]
    service_label = re.sub(r"[^a-zA-Z0-9_]", "_", render.POOL_LABEL)
    assert relabel == {"sourceLabels": [f"__meta_kubernetes_service_label_{service_label}"],
                       "targetLabel": dashboard.POOL_LABEL}


def test_a_service_monitor_without_the_metrics_service_is_refused(helm: Helm) -> None:
    result = helm.run("template", "swd", str(CHART),
                      "--set", "serviceMonitor.enabled=true", "--set", "metrics.service.enabled=false", check=False)
    assert result.returncode != 0 and "serviceMonitor.enabled needs metrics.service.enabled" in result.stderr


def test_chart_crd_is_the_generated_crd() -> None:
    repo = CHART.parents[1]
    assert (CHART / "crds" / "t2iworkflows.yaml").read_text() == (repo / "crds" / "t2iworkflows.yaml").read_text()
    assert yaml.safe_load((CHART / "files" / "rbac-rules.yaml").read_text()) == rbac.RULES
