"""pytest fixtures giving tests a real cluster.

`kube_config` is the test bed started for this session (private state dir and ports,
stopped at the end), or the cluster named by $SWIFTDIFFUSION_KUBECONFIG, untouched,
so the same tests run on kind, k3d or a real cluster.
"""
from __future__ import annotations

import atexit
import contextlib
import os
import re
import uuid
from collections.abc import Iterator

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from tests.testbed.cluster import TestBed
from tests.testbed.waiting import eventually

EXISTING_CLUSTER_ENV = "SWIFTDIFFUSION_KUBECONFIG"


@pytest.fixture(scope="session")
def kube_config(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    existing = os.environ.get(EXISTING_CLUSTER_ENV)
    if existing:
        yield existing
        return
    bed = TestBed(tmp_path_factory.mktemp("testbed"))
    atexit.register(bed.down)  # also covers an interpreter exit that skips teardown
    try:
        yield str(bed.up(tied_to_parent=True))
    finally:
        bed.down()


@pytest.fixture(scope="session")
def k8s_client(kube_config: str) -> Iterator[client.ApiClient]:
    api_client = config.new_client_from_config(config_file=kube_config)
    try:
        yield api_client
    finally:
        api_client.close()


def _namespace_name(test_name: str) -> str:
    stem = re.sub(r"[^a-z0-9-]+", "-", test_name.lower()).strip("-")[:40].rstrip("-")
    return f"t-{stem}-{uuid.uuid4().hex[:6]}"


@contextlib.contextmanager
def fresh_namespace(k8s_client: client.ApiClient, test_name: str) -> Iterator[str]:
    """A new namespace named after the test, ready for pods (its default ServiceAccount
    exists), deleted afterwards."""
    core = client.CoreV1Api(k8s_client)
    name = _namespace_name(test_name)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    try:
        eventually(lambda: core.read_namespaced_service_account("default", name), timeout=60)
        yield name
    finally:
        try:
            core.delete_namespace(name, propagation_policy="Background")
        except ApiException as error:
            if error.status != 404:
                raise


@pytest.fixture
def namespace(k8s_client: client.ApiClient, request: pytest.FixtureRequest) -> Iterator[str]:
    with fresh_namespace(k8s_client, request.node.name) as name:
        yield name
