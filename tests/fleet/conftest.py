"""Fixtures for the fleet: a test bed whose GPU nodes run the operator's pods as real
runtime processes (tests/testbed/fleet), started once for this package.

The fleet's workflows read their weights from a PersistentVolume whose hostPath is the
fleet's model store (the tiny offline set under the examples' model names).
"""
from __future__ import annotations

import atexit
import pathlib
from collections.abc import Iterator

import pytest
from kubernetes import config
from kubernetes.client import ApiClient

from swiftdiffusion.operator.local_process import LocalOperator
from tests.reconcile.fixtures import Cluster, install_crd, running_operator
from tests.testbed.cluster import TestBed
from tests.testbed.fixtures import fresh_namespace
from tests.testbed.fleet import model_store

@pytest.fixture(scope="package")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestBed]:
    bed = TestBed(tmp_path_factory.mktemp("fleet"), fleet=True)
    atexit.register(bed.down)
    try:
        bed.up(tied_to_parent=True)
        yield bed
    finally:
        bed.down()


@pytest.fixture(scope="package")
def fleet_client(fleet: TestBed) -> Iterator[ApiClient]:
    api = config.new_client_from_config(config_file=str(fleet.kubeconfig))
    try:
        install_crd(api)
        yield api
    finally:
        api.close()


@pytest.fixture
def fleet_namespace(fleet_client: ApiClient, request: pytest.FixtureRequest) -> Iterator[str]:
    with fresh_namespace(fleet_client, request.node.name) as name:
        yield name


@pytest.fixture
def fleet_cluster(fleet: TestBed, fleet_client: ApiClient, fleet_namespace: str) -> Iterator[Cluster]:
    """The namespace, with the `sdxl-models` claim bound to the fleet's model store."""
    volume = model_store.bind_claim(fleet.api(), fleet_namespace, fleet.model_store)
    try:
        yield Cluster(fleet_client, fleet_namespace)
    finally:
        fleet.api().request("DELETE", f"/api/v1/persistentvolumes/{volume}")


@pytest.fixture
def fleet_operator(fleet: TestBed, fleet_client: ApiClient, fleet_namespace: str,
                   tmp_path: pathlib.Path) -> Iterator[LocalOperator]:
    with running_operator(fleet_client, str(fleet.kubeconfig), fleet_namespace, tmp_path) as process:
        yield process


@pytest.fixture
def scaling_operator(fleet: TestBed, fleet_client: ApiClient, fleet_namespace: str,
                     tmp_path: pathlib.Path) -> Iterator[LocalOperator]:
    """The operator pointing KEDA at the fleet's Prometheus, polling every 2 s."""
    args = ("--prometheus-url", fleet.prometheus_url(), "--autoscaling-polling-interval", "2")
    with running_operator(fleet_client, str(fleet.kubeconfig), fleet_namespace, tmp_path, args) as process:
        yield process
