"""What `make fleet-up` adds for a person on top of the fleet: the CRD, the operator
(all namespaces, as the admin, its ScaledObjects pointing at the fleet's Prometheus), and
the `sdxl-models` claim in `default` bound to the fleet's model store, so
`kubectl apply -f examples/...` serves (and autoscales) at once."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import yaml

from swiftdiffusion.runtime.dev.ports import free_ports
from tests.testbed import processes
from tests.testbed.cluster import TestBed, http_ok, wait_for
from tests.testbed.fleet import model_store

CRDS = Path(__file__).resolve().parents[3] / "crds"


def provision(bed: TestBed) -> str:
    """Returns the operator's liveness URL once it answers."""
    api = bed.api()
    for path in sorted(CRDS.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        api.request("PATCH", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{crd['metadata']['name']}"
                    "?fieldManager=fleet-up&force=true", crd, content_type="application/apply-patch+yaml")
    existing = api.request("GET", "/api/v1/namespaces/default/persistentvolumeclaims")["items"]
    if not any(claim["metadata"]["name"] == "sdxl-models" for claim in existing):
        model_store.bind_claim(api, "default", bed.model_store)
    liveness, metrics = free_ports(2)
    url = f"http://127.0.0.1:{liveness}/healthz"
    processes.start("operator", [sys.executable, "-m", "swiftdiffusion.operator.main", "--liveness", url,
                                 "--metrics-port", str(metrics), "--prometheus-url", bed.prometheus_url()],
                    bed.state, tied_to_parent=False,
                    env={**os.environ, "KUBECONFIG": str(bed.kubeconfig)})
    wait_for("the operator's liveness endpoint", lambda: http_ok(url), 60)
    return url
