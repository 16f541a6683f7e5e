"""Fixtures for the image tests: both images built (or found by the hash of their inputs),
a podman network for pool pods, and the tiny model set laid out as an example's store."""
from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from swiftdiffusion.operator import model as m
from tests.images.podman import build_images, podman
from tests.reconcile.workflows import example
from tests.testbed.fleet import model_store

EXAMPLE = "sdxl-canny-depth"
NAMESPACE = "images"


@pytest.fixture(scope="session")
def images() -> dict[str, str]:
    """name (operator, runtime) -> image reference; installs podman and makes the base first
    if this machine has neither (a cold build takes minutes, a warm one seconds)."""
    return build_images()


@pytest.fixture(scope="session")
def pod_network() -> Iterator[str]:
    """A bridge network: each pool pod its own address, ports as rendered, as in a cluster."""
    name = f"swd-images-{uuid.uuid4().hex[:6]}"
    podman("network", "create", name)
    try:
        yield name
    finally:
        podman("network", "rm", "--force", name, check=False)


def example_workflow_with(read_only_store: bool = True) -> m.Workflow:
    """The example, its model store (a claim) read-only as written or made writable."""
    body = example(EXAMPLE)[0]
    body["metadata"].update(namespace=NAMESPACE, uid=str(uuid.uuid4()))
    body["spec"]["modelStore"]["readOnly"] = read_only_store
    return m.Workflow.from_body(body)


@pytest.fixture(scope="session")
def example_workflow() -> m.Workflow:
    return example_workflow_with()


@pytest.fixture(scope="session")
def example_store(tiny_model_set: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny set under the example's model names, copied so that its non-root user can read
    them (as an admin makes a shared store: save_pretrained writes some weights owner-only)
    without changing the modes of the model set, which the fleet store hard-links."""
    root = tmp_path_factory.mktemp("example-store")
    links = model_store.populate(root / "links", tiny_model_set, example(EXAMPLE))
    store = root / "store"
    shutil.copytree(links, store, symlinks=False)
    for path in [store, *store.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return store
