"""What a GitOps controller sees: applying the same workflow again, server-side, changes
nothing (no perpetual diff from schema defaults for Argo CD or Flux to fight)."""
from __future__ import annotations

import pytest

from tests.reconcile.fixtures import Cluster
from tests.reconcile.workflows import example

pytestmark = pytest.mark.cluster


@pytest.mark.parametrize("name", ["sdxl-canny-depth", "sdxl-latent-parallel", "shared-pool"])
def test_reapplying_an_example_server_side_is_a_no_op(t2i_crd: str, cluster: Cluster, name: str) -> None:
    for doc in example(name):
        first = cluster.apply_workflow(doc)
        again = cluster.apply_workflow(doc)
        assert again["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"], doc["metadata"]["name"]
        assert again["metadata"]["generation"] == first["metadata"]["generation"] == 1
        assert again["spec"] == first["spec"], "the defaults the API server filled in stay as they were"
