"""Command lines of the test bed's five daemons: pure functions of where things are."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tests.testbed import build, nodes
from tests.testbed.pki import SERVICE_IP

SERVICE_RANGE = f"{SERVICE_IP.rsplit('.', 1)[0]}.0/24"
POD_RANGE = "10.244.0.1/16"
AUDIT_POLICY = Path(__file__).with_name("audit-policy.yaml")
# Short, for tests, as the fleet's 2 s scrape: the default (15 s) makes every autoscaling test wait
# whole periods; the planner's calibration takes the period from here.
HPA_SYNC_SECONDS = 5


@dataclass(frozen=True)
class Layout:
    """Where one test bed keeps its binaries and state, and the ports it was given."""

    bin: Path
    state: Path
    ports: dict[str, int]
    service_range: str = SERVICE_RANGE

    @property
    def pki(self) -> Path:
        return self.state / "pki"

    @property
    def etcd_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['etcd-client']}"

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.ports['apiserver']}"

    def kubeconfig(self, identity: str) -> Path:
        return self.state / "kubeconfigs" / f"{identity}.kubeconfig"


def audit_log(state: Path) -> Path:
    """The apiserver's audit log (AUDIT_POLICY: requests of ServiceAccounts outside kube-system)."""
    return state / "logs" / "audit.log"


def etcd(at: Layout) -> list[str]:
    peer = f"http://127.0.0.1:{at.ports['etcd-peer']}"
    return [
        str(at.bin / "etcd"), "--name=testbed", f"--data-dir={at.state / 'etcd-data'}",
        f"--listen-client-urls={at.etcd_url}", f"--advertise-client-urls={at.etcd_url}",
        f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=testbed={peer}",
        "--unsafe-no-fsync=true",  # throwaway data: durability only costs time
        "--log-level=warn",
    ]


def kube_apiserver(at: Layout) -> list[str]:
    pki = at.pki
    return [
        str(at.bin / "kube-apiserver"),
        f"--etcd-servers={at.etcd_url}",
        "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={at.ports['apiserver']}",
        # Endpoints may not hold loopback addresses, so the `kubernetes` Service keeps none.
        "--endpoint-reconciler-type=none",
        f"--tls-cert-file={pki / 'apiserver.crt'}", f"--tls-private-key-file={pki / 'apiserver.key'}",
        f"--client-ca-file={pki / 'ca.crt'}",
        "--authorization-mode=Node,RBAC",
        # On top of the default plugins; OwnerReferencesPermissionEnforcement (as hardened clusters
        # run it) makes blockOwnerDeletion need `update` on the owner's finalizers.
        "--enable-admission-plugins=NodeRestriction,OwnerReferencesPermissionEnforcement",
        f"--audit-policy-file={AUDIT_POLICY}", f"--audit-log-path={audit_log(at.state)}",
        "--allow-privileged=true",
        f"--service-cluster-ip-range={at.service_range}",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        f"--service-account-key-file={pki / 'sa.pub'}",
        f"--service-account-signing-key-file={pki / 'sa.key'}",
        f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
        f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
        # Aggregation layer: front-proxy CA and the apiserver's own proxy client cert.
        f"--requestheader-client-ca-file={pki / 'front-proxy-ca.crt'}",
        "--requestheader-allowed-names=front-proxy-client",
        "--requestheader-username-headers=X-Remote-User",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        f"--proxy-client-cert-file={pki / 'front-proxy-client.crt'}",
        f"--proxy-client-key-file={pki / 'front-proxy-client.key'}",
        "--enable-aggregator-routing=true",
        f"--cert-dir={at.state / 'certs'}",
        "--profiling=false",
    ]


def _control_loop(at: Layout, name: str, port: int) -> list[str]:
    config = at.kubeconfig(name)
    return [
        str(at.bin / name),
        f"--kubeconfig={config}", f"--authentication-kubeconfig={config}", f"--authorization-kubeconfig={config}",
        "--bind-address=127.0.0.1", f"--secure-port={port}", f"--cert-dir={at.state / 'certs' / name}",
        "--leader-elect=false",
    ]


def kube_controller_manager(at: Layout) -> list[str]:
    """All default controllers; the SA key signs tokens, the root CA goes into them; the HPA
    syncs every HPA_SYNC_SECONDS."""
    pki = at.pki
    return [
        *_control_loop(at, "kube-controller-manager", at.ports["controller-manager"]),
        f"--horizontal-pod-autoscaler-sync-period={HPA_SYNC_SECONDS}s",
        f"--service-account-private-key-file={pki / 'sa.key'}",
        f"--root-ca-file={pki / 'ca.crt'}",
        "--use-service-account-credentials=true",
        f"--cluster-signing-cert-file={pki / 'ca.crt'}",
        f"--cluster-signing-key-file={pki / 'ca.key'}",
        "--cluster-name=swiftdiffusion-testbed",
    ]


def kube_scheduler(at: Layout) -> list[str]:
    return _control_loop(at, "kube-scheduler", at.ports["scheduler"])


def kwok(at: Layout) -> list[str]:
    """kwok plays the kubelet of every node annotated as fake, with kwokctl's default stages."""
    return [
        str(at.bin / "kwok"), f"--kubeconfig={at.kubeconfig('kwok')}",
        f"--config={at.bin / build.KWOK_STAGES}",
        f"--manage-nodes-with-annotation-selector={nodes.KWOK_ANNOTATION}={nodes.KWOK_ANNOTATION_VALUE}",
        "--node-ip=127.0.0.1", "--node-lease-duration-seconds=40", f"--cidr={POD_RANGE}",
    ]
