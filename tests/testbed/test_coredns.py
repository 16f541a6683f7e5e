"""CoreDNS on the test bed answers Service names from live EndpointSlices, as in a cluster."""
from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dns.message
import dns.query
import dns.rdatatype
import pytest
from kubernetes import client

from swiftdiffusion.runtime.dev.ports import free_port
from tests.testbed.cluster import MARKER, TestBed
from tests.testbed.dns import CoreDNS, start_coredns
from tests.testbed.waiting import eventually

pytestmark = pytest.mark.cluster

READY_IPS = ("10.250.1.2", "10.250.1.3")
NOT_READY_IP = "10.250.1.4"


@pytest.fixture(scope="module")
def coredns(kube_config: str) -> Iterator[CoreDNS]:
    state = Path(kube_config).parent
    if not (state / MARKER).is_file():
        pytest.skip("starts CoreDNS beside the test bed; $SWIFTDIFFUSION_KUBECONFIG names another cluster")
    server = start_coredns(TestBed(state), "127.0.0.1", free_port(), tied_to_parent=True)
    try:
        yield server
    finally:
        server.stop()


def a_records(server: CoreDNS, name: str) -> set[str]:
    answer = dns.query.udp(dns.message.make_query(name, "A"), server.ip, port=server.port, timeout=2)
    return {record.address for rrset in answer.answer if rrset.rdtype == dns.rdatatype.A for record in rrset}


def answers(server: CoreDNS, name: str, want: set[str], timeout: float) -> None:
    seen: list[set[str]] = []

    def check() -> bool:
        seen.append(a_records(server, name))
        return seen[-1] == want

    try:
        eventually(check, timeout=timeout, interval=0.1)
    except AssertionError:
        raise AssertionError(f"{name} answered {seen[-1:]}, not {want} within {timeout} s") from None


def endpoint(ip: str, ready: bool) -> dict[str, Any]:
    return {"addresses": [ip], "conditions": {"ready": ready}}


def headless_with_slice(k8s_client: client.ApiClient, namespace: str, name: str) -> None:
    """A headless Service without selector and its EndpointSlice, as a controller would write it."""
    client.CoreV1Api(k8s_client).create_namespaced_service(namespace, {
        "metadata": {"name": name},
        "spec": {"clusterIP": "None", "ports": [{"name": "grpc", "port": 50051}]},
    })
    client.DiscoveryV1Api(k8s_client).create_namespaced_endpoint_slice(namespace, {
        "metadata": {"name": name, "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4",
        "ports": [{"name": "grpc", "port": 50051, "protocol": "TCP"}],
        "endpoints": [*(endpoint(ip, True) for ip in READY_IPS), endpoint(NOT_READY_IP, False)],
    })


def test_headless_service_resolves_to_its_ready_endpoints_only(coredns, k8s_client, namespace):
    headless_with_slice(k8s_client, namespace, "pool")
    answers(coredns, f"pool.{namespace}.svc.cluster.local", set(READY_IPS), timeout=10)


def test_cluster_ip_service_resolves_to_its_cluster_ip(coredns, k8s_client, namespace):
    service = client.CoreV1Api(k8s_client).create_namespaced_service(namespace, {
        "metadata": {"name": "front"}, "spec": {"ports": [{"name": "grpc", "port": 50051}]},
    })
    assert service.spec.cluster_ip
    answers(coredns, f"front.{namespace}.svc.cluster.local", {service.spec.cluster_ip}, timeout=10)


def test_endpoint_turning_not_ready_leaves_the_answer_within_seconds(coredns, k8s_client, namespace):
    headless_with_slice(k8s_client, namespace, "pool")
    name = f"pool.{namespace}.svc.cluster.local"
    answers(coredns, name, set(READY_IPS), timeout=10)
    client.DiscoveryV1Api(k8s_client).patch_namespaced_endpoint_slice("pool", namespace, {
        "endpoints": [endpoint(READY_IPS[0], True), endpoint(READY_IPS[1], False), endpoint(NOT_READY_IP, False)],
    })
    # A TTL of 1 s and a watch: about a second here; the bound leaves room for a busy machine.
    patched = time.monotonic()
    answers(coredns, name, {READY_IPS[0]}, timeout=15)
    assert time.monotonic() - patched < 15
