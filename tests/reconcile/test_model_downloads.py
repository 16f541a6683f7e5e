"""Whether pool pods may download models is decided by the model store: offline unless it is a
writable volume, and then the startup probe waits long enough for a first download."""
from __future__ import annotations

from typing import Any

import pytest
import yaml

from swiftdiffusion.operator import render
from tests.reconcile.workflows import CANNY, workflow

STORES = {
    "image": ({}, False),
    "read-only claim": ({"type": "PersistentVolumeClaim", "claimName": "models"}, False),
    "writable claim": ({"type": "PersistentVolumeClaim", "claimName": "models", "readOnly": False}, True),
    "writable host path": ({"type": "HostPath", "hostPath": "/data/models", "readOnly": False}, True),
}


def _pool(manifests: list[dict[str, Any]], kind: str, suffix: str) -> dict[str, Any]:
    return next(x for x in manifests if x["kind"] == kind and x["metadata"]["name"].endswith(suffix))


@pytest.mark.parametrize("store", STORES)
def test_pools_download_only_into_a_writable_store_with_a_startup_probe_to_match(store: str) -> None:
    spec, downloads = STORES[store]
    manifests = render.render_workflow(workflow(modelStore=spec, controlnets=[CANNY]))
    for suffix in ("-base", "-cn"):
        config = yaml.safe_load(_pool(manifests, "ConfigMap", suffix)["data"]["config.yaml"])
        assert config["modelDownloads"] is downloads
        container = _pool(manifests, "Deployment", suffix)["spec"]["template"]["spec"]["containers"][0]
        probe = container["startupProbe"]
        budget = render.DOWNLOAD_SECONDS if downloads else render.LOAD_SECONDS
        assert probe["periodSeconds"] * probe["failureThreshold"] == budget
        models = [m for m in container["volumeMounts"] if m["name"] == "models"]
        assert all(m["readOnly"] is not downloads for m in models)
