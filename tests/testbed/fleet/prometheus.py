"""The fleet's Prometheus: finds the runtime pods through the fleet's API server, as a
cluster Prometheus does (kubernetes_sd, role pod), and gives their series the labels the
chart's ServiceMonitor gives them (`namespace`, `pod`, `pool`), which the dashboard and the
operator's KEDA queries group by.

The server is Prometheus 3 built with the test bed (tests/testbed/prometheus: Debian's 2.42,
which the monitoring tests run, has no Kubernetes discovery). It authenticates as its own user with the read-only rules of kube-prometheus' Prometheus role,
and listens on an add-on address of the pod network at a fixed port
(`TestBed.prometheus_url`): pods and host processes (KEDA) reach it, and a restart keeps
its URL (a test may stop it to see the autoscaler hold).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.testbed.kubeconfig import write_kubeconfig

if TYPE_CHECKING:
    from tests.testbed.cluster import TestBed

NAME = "prometheus"  # process name, client cert (pki.CLIENTS) and folder in the state dir
USER = "system:prometheus"
JOB = "swiftdiffusion-runtime"
SCRAPE_SECONDS = 2  # short, for tests: an autoscaler reacts within a few scrapes
SCRAPE_INTERVAL = f"{SCRAPE_SECONDS}s"
RUNTIME_POD_LABEL = ("app.kubernetes.io/name", "swiftdiffusion")
POOL_LABEL = "swiftdiffusion.io/pool"
METRICS_PORT_NAME = "metrics"
CLUSTER_ROLE: dict[str, Any] = {
    "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": USER},
    "rules": [
        {"apiGroups": [""], "resources": ["nodes", "services", "endpoints", "pods"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"]},
    ],
}
CLUSTER_ROLE_BINDING: dict[str, Any] = {
    "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": USER},
    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": USER},
    "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": USER}],
}


def meta_label(label: str) -> str:
    """The discovery label of a pod label: `__meta_kubernetes_pod_label_<name, sanitised>`."""
    return "__meta_kubernetes_pod_label_" + "".join(c if c.isalnum() else "_" for c in label)


def config(kubeconfig: Path) -> dict[str, Any]:
    """prometheus.yml: the `metrics` port of every running runtime pod, in every namespace."""
    name, value = RUNTIME_POD_LABEL
    relabel = [
        {"source_labels": [meta_label(name)], "regex": value, "action": "keep"},
        {"source_labels": ["__meta_kubernetes_pod_container_port_name"], "regex": METRICS_PORT_NAME, "action": "keep"},
        # As the Prometheus operator does for a pod's scrape: finished pods are not targets.
        {"source_labels": ["__meta_kubernetes_pod_phase"], "regex": "Succeeded|Failed", "action": "drop"},
        {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
        {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
        {"source_labels": [meta_label(POOL_LABEL)], "target_label": "pool"},
    ]
    return {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "scrape_timeout": SCRAPE_INTERVAL,
                   "evaluation_interval": SCRAPE_INTERVAL},
        "scrape_configs": [{
            "job_name": JOB,
            "kubernetes_sd_configs": [{"role": "pod", "kubeconfig_file": str(kubeconfig)}],
            "relabel_configs": relabel,
        }],
    }


def install(bed: TestBed) -> list[str]:
    """Binds Prometheus' RBAC, writes its kubeconfig and configuration (JSON, which is YAML);
    returns its command line."""
    api = bed.api()
    api.create_or_replace("/apis/rbac.authorization.k8s.io/v1/clusterroles", CLUSTER_ROLE)
    api.create_or_replace("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", CLUSTER_ROLE_BINDING)
    folder = bed.state / NAME
    kubeconfig = write_kubeconfig(folder / "kubeconfig", api.server, bed.pki, NAME)
    config_file = folder / "prometheus.yml"
    config_file.write_text(json.dumps(config(kubeconfig), indent=2) + "\n")
    return [str(Path(bed.marker()["bin"]) / "prometheus"), f"--config.file={config_file}", f"--storage.tsdb.path={folder / 'data'}",
            f"--web.listen-address={bed.network().prometheus_address}", "--log.level=warn"]
