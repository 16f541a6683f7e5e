"""KEDA for the fleet, installed as KEDA's own manifests install it, its two Deployments
played by host processes: the operator (turns each ScaledObject into an HPA named
`keda-hpa-<ScaledObject>`, and answers metric queries over gRPC) and the metrics adapter
(serves `external.metrics.k8s.io`, which kube-controller-manager's HPA controller reads
through the aggregation layer).

The CRDs and RBAC come from the pinned module (written next to the binaries at build time).
Both processes authenticate as the ServiceAccount `keda:keda-operator` that RBAC binds (a
client cert, pki.CLIENTS), and share one cert from a CA of KEDA's own for their mutual-TLS
gRPC link and the adapter's serving cert, named for both Services as KEDA's cert rotation
names them (no cert-manager, no rotation).

The API server routes aggregated APIs to a Service's endpoints
(`--enable-aggregator-routing`), and an endpoint may not be loopback: the adapter listens on
an add-on address of the pod network (network.ADDONS), which the selector-less Service
`keda-metrics-apiserver` lists in its EndpointSlice.
"""
from __future__ import annotations

import base64
import os
import urllib.error
from pathlib import Path
from typing import Any

import yaml

from swiftdiffusion.runtime.dev.ports import free_port
from tests.testbed import build
from tests.testbed.api import ApiClient, collection
from tests.testbed.cluster import TestBed, wait_for
from tests.testbed.fleet.network import CLUSTER_DOMAIN, FleetNetwork
from tests.testbed.kubeconfig import write_kubeconfig
from tests.testbed.pki import make_mutual_tls


NAMESPACE = "keda"
IDENTITY = "keda-operator"  # its client cert in pki.CLIENTS: the ServiceAccount KEDA's RBAC binds
CERT = "keda"  # the gRPC and serving cert (pki.make_mutual_tls), signed by `keda-ca`
OPERATOR_SERVICE = "keda-operator"
ADAPTER_SERVICE = "keda-metrics-apiserver"
API_SERVICE = "v1beta1.external.metrics.k8s.io"
ADAPTER_PORT = 6443
GRPC_PORT = 9666
OPERATOR_HEALTH_PORT = 8081
OPERATOR_METRICS_PORT = 8080
ENDPOINTS_MANAGER = "swiftdiffusion-testbed"  # so the EndpointSlice controller leaves the slice alone


def hpa_name(scaled_object: str) -> str:
    """The HPA KEDA's operator creates for a ScaledObject."""
    return f"keda-hpa-{scaled_object}"


def service_names(service: str) -> list[str]:
    return [f"{service}.{NAMESPACE}.svc", f"{service}.{NAMESPACE}.svc.{CLUSTER_DOMAIN}"]


def manifests(path: Path) -> list[dict[str, Any]]:
    return [document for document in yaml.safe_load_all(path.read_text()) if document]


def adapter_objects(network: FleetNetwork, ca_bundle: bytes) -> list[dict[str, Any]]:
    """The adapter's Service, its one endpoint, and the APIService pointing at it."""
    meta = {"name": ADAPTER_SERVICE, "namespace": NAMESPACE}
    service = {"apiVersion": "v1", "kind": "Service", "metadata": meta,
               "spec": {"ports": [{"name": "https", "port": 443, "targetPort": ADAPTER_PORT, "protocol": "TCP"}]}}
    endpoint_slice = {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {**meta, "labels": {"kubernetes.io/service-name": ADAPTER_SERVICE,
                                        "endpointslice.kubernetes.io/managed-by": ENDPOINTS_MANAGER}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [network.addon_ip("keda-adapter")], "conditions": {"ready": True}}],
        "ports": [{"name": "https", "port": ADAPTER_PORT, "protocol": "TCP"}],
    }
    api_service = {
        "apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService", "metadata": {"name": API_SERVICE},
        "spec": {"group": "external.metrics.k8s.io", "version": "v1beta1",
                 "service": {"name": ADAPTER_SERVICE, "namespace": NAMESPACE, "port": 443},
                 "caBundle": base64.b64encode(ca_bundle).decode(),
                 "groupPriorityMinimum": 100, "versionPriority": 100},
    }
    return [service, endpoint_slice, api_service]


def install(bed: TestBed) -> None:
    """Everything KEDA needs before its processes start: CRDs, namespace, RBAC, certs,
    kubeconfig, and the adapter's Service and APIService."""
    api, bin_dir = bed.api(), Path(bed.marker()["bin"])
    crds = manifests(bin_dir / build.KEDA_CRDS)
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
    for body in [*crds, namespace, *manifests(bin_dir / build.KEDA_RBAC)]:
        api.create_or_replace(collection(body), body)
    # Else the operator may start its watches before the API serves keda.sh.
    wait_for("KEDA's CRDs to be Established", lambda: all(established(api, crd["metadata"]["name"]) for crd in crds), 30)
    make_mutual_tls(bed.pki, CERT, service_names(OPERATOR_SERVICE) + service_names(ADAPTER_SERVICE))
    certs = cert_dir(bed)
    certs.mkdir(parents=True, exist_ok=True)
    for name, source in (("ca.crt", f"{CERT}-ca.crt"), ("tls.crt", f"{CERT}.crt"), ("tls.key", f"{CERT}.key")):
        (certs / name).write_bytes((bed.pki / source).read_bytes())
    write_kubeconfig(kubeconfig(bed), api.server, bed.pki, IDENTITY)
    for body in adapter_objects(bed.network(), (certs / "ca.crt").read_bytes()):
        api.create_or_replace(collection(body), body)


def cert_dir(bed: TestBed) -> Path:
    """`ca.crt`, `tls.crt`, `tls.key`: the layout both KEDA processes read from `--cert-dir`."""
    return bed.state / "keda" / "certs"


def kubeconfig(bed: TestBed) -> Path:
    return bed.state / "keda" / "kubeconfig"


def environment(bed: TestBed) -> dict[str, str]:
    """What KEDA's Deployments set (and the ServiceAccount's namespace file would say)."""
    return {**os.environ, "POD_NAMESPACE": NAMESPACE, "KEDA_CLUSTER_OBJECT_NAMESPACE": NAMESPACE, "WATCH_NAMESPACE": ""}


def operator_argv(bed: TestBed) -> list[str]:
    ip = bed.network().addon_ip("keda-operator")
    return [
        str(Path(bed.marker()["bin"]) / "keda-operator"), f"--kubeconfig={kubeconfig(bed)}",
        f"--metrics-bind-address={ip}:{OPERATOR_METRICS_PORT}",
        f"--health-probe-bind-address={ip}:{OPERATOR_HEALTH_PORT}",
        f"--metrics-service-bind-address={ip}:{GRPC_PORT}",
        f"--cert-dir={cert_dir(bed)}", "--zap-log-level=info", "--zap-encoder=console",
    ]


def adapter_argv(bed: TestBed) -> list[str]:
    network, certs, config = bed.network(), cert_dir(bed), kubeconfig(bed)
    return [
        str(Path(bed.marker()["bin"]) / "keda-adapter"),
        f"--bind-address={network.addon_ip('keda-adapter')}", f"--secure-port={ADAPTER_PORT}",
        f"--tls-cert-file={certs / 'tls.crt'}", f"--tls-private-key-file={certs / 'tls.key'}", f"--cert-dir={certs}",
        f"--kubeconfig={config}", f"--lister-kubeconfig={config}",
        f"--authentication-kubeconfig={config}", f"--authorization-kubeconfig={config}",
        f"--metrics-service-address={network.addon_ip('keda-operator')}:{GRPC_PORT}",
        f"--metrics-service-grpc-authority={service_names(OPERATOR_SERVICE)[-1]}",
        f"--port={free_port()}",  # its own /metrics, which binds every interface
        "--zap-log-level=info", "--zap-encoder=console",
    ]


def established(api: ApiClient, crd: str) -> bool:
    status = api.request("GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{crd}").get("status", {})
    return any(c["type"] == "Established" and c["status"] == "True" for c in status.get("conditions") or [])


def available(api: ApiClient) -> bool:
    """The aggregator reaches the adapter: what the HPA controller needs to read its metrics."""
    try:
        status = api.request("GET", f"/apis/apiregistration.k8s.io/v1/apiservices/{API_SERVICE}").get("status", {})
    except (urllib.error.URLError, OSError):
        return False
    return any(c["type"] == "Available" and c["status"] == "True" for c in status.get("conditions", []))
