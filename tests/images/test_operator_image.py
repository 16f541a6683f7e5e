"""The operator image, run with the chart's securityContext and a mounted ServiceAccount token
(as a pod gets it), reconciles an example against the test bed's API server to Ready."""
from __future__ import annotations

import json
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest
import yaml
from kubernetes.client import ApiClient

from swiftdiffusion.runtime.dev.ports import free_ports
from tests.chart.helm import CHART
from tests.images.podman import Container, run_detached
from tests.images.pods import security_options
from tests.reconcile.fixtures import Cluster, service_account_kubeconfig
from tests.reconcile.workflows import example
from tests.testbed.waiting import eventually

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


def service_account_volume(api: ApiClient, admin_config: str, namespace: str, folder: Path) -> tuple[Path, str]:
    """The files a pod finds at SERVICE_ACCOUNT_DIR (token, ca.crt, namespace) for the
    operator's least-privilege ServiceAccount, and the API server's URL."""
    kubeconfig = json.loads(Path(service_account_kubeconfig(api, admin_config, namespace,
                                                            folder / "kubeconfig")).read_text())
    cluster = kubeconfig["clusters"][0]["cluster"]
    secrets = folder / "serviceaccount"
    secrets.mkdir()
    (secrets / "token").write_text(kubeconfig["users"][0]["user"]["token"])
    (secrets / "ca.crt").write_bytes(Path(cluster["certificate-authority"]).read_bytes())
    (secrets / "namespace").write_text(namespace)
    for path in secrets.iterdir():
        path.chmod(0o644)
    secrets.chmod(0o755)
    return secrets, cluster["server"]


def live(container: Container, port: int) -> bool:
    if not container.state()["Running"]:
        pytest.fail(f"the operator container exited:\n{container.logs()[-3000:]}")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
        return response.status == 200


def test_operator_image_reconciles_the_shared_pool_example_to_ready(
        images: dict[str, str], t2i_crd: str, k8s_client: ApiClient, kube_config: str, namespace: str,
        cluster: Cluster, tmp_path: Path) -> None:
    secrets, server = service_account_volume(k8s_client, kube_config, namespace, tmp_path)
    api = urllib.parse.urlsplit(server)
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    pod = {"securityContext": values["podSecurityContext"]}
    liveness, metrics = free_ports(2)
    options = [
        "--network", "host",  # the test bed's API server listens on this machine's loopback
        *security_options(pod, {"securityContext": values["securityContext"]}),
        "--mount", "type=tmpfs,destination=/tmp,tmpfs-mode=1777",
        "--volume", f"{secrets}:{SERVICE_ACCOUNT_DIR}:ro",
        "--env", f"KUBERNETES_SERVICE_HOST={api.hostname}", "--env", f"KUBERNETES_SERVICE_PORT={api.port}",
        images["operator"],
        "--namespace", namespace, "--liveness", f"http://127.0.0.1:{liveness}/healthz",
        "--metrics-port", str(metrics),
    ]
    container = run_detached(options, f"operator-{uuid.uuid4().hex[:6]}")
    try:
        eventually(lambda: live(container, liveness), timeout=60, interval=0.5)
        names = []
        for body in example("shared-pool"):
            cluster.apply_workflow(body)
            names.append(body["metadata"]["name"])
        for name in names:
            status = cluster.wait_ready(name, timeout=120)["status"]
            assert status["controlnetPool"]["name"] == "swd-cn-shared"
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=5) as response:
            assert b"swiftdiffusion_operator" in response.read()
        container.stop()
        assert container.wait_exit(timeout=30) == 0
    finally:
        print(f"--- operator log tail\n{container.logs()[-3000:]}")
        container.remove()
