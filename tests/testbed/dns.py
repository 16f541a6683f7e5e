"""CoreDNS for the test bed: names under cluster.local answered from the API server by
CoreDNS's kubernetes plugin, as in a cluster.

CoreDNS authenticates as its own user, bound to the read-only ClusterRole of CoreDNS's
official manifests (not system:masters), so the test bed exercises the RBAC a cluster
gives it. `start_coredns` records the process like the other daemons: `down` stops it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from swiftdiffusion.runtime.dev.ports import free_ports
from tests.testbed import build, processes
from tests.testbed.kubeconfig import CONTEXT, write_kubeconfig

if TYPE_CHECKING:
    from tests.testbed.cluster import TestBed

ZONES = ("cluster.local", "in-addr.arpa")
IDENTITY = "coredns"  # its client cert in pki.CLIENTS
USER = "system:coredns"
RBAC = "/apis/rbac.authorization.k8s.io/v1"
CLUSTER_ROLE: dict[str, Any] = {
    "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": USER},
    "rules": [
        {"apiGroups": [""], "resources": ["endpoints", "services", "pods", "namespaces"], "verbs": ["list", "watch"]},
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
    ],
}
CLUSTER_ROLE_BINDING: dict[str, Any] = {
    "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": USER},
    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": USER},
    "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": USER}],
}


def corefile(listen_ip: str, port: int, kubeconfig: Path, health_port: int, ready_port: int, *,
             ttl: int = 1, endpoint_pod_names: bool = False) -> str:
    """One server on `listen_ip:port`; answers live at most `ttl` seconds, cache included
    (its default minimum of 5 s would hide an endpoint turning not-ready)."""
    pod_names = "\n        endpoint_pod_names" if endpoint_pod_names else ""
    return f""".:{port} {{
    bind {listen_ip}
    ready 127.0.0.1:{ready_port}
    health 127.0.0.1:{health_port}
    errors
    log
    cache {ttl} {{
        success 9984 {ttl} 0
        denial 9984 {ttl} 0
    }}
    kubernetes {" ".join(ZONES)} {{
        kubeconfig {kubeconfig} {CONTEXT}
        ttl {ttl}{pod_names}
    }}
}}
"""


def argv(bin_dir: Path, conf: Path) -> list[str]:
    return [str(bin_dir / "coredns"), "-conf", str(conf)]


@dataclass(frozen=True)
class CoreDNS:
    """A running CoreDNS: where it answers, and its record in the test bed's state."""

    state: Path
    name: str
    ip: str
    port: int
    ready_url: str

    def stop(self) -> None:
        processes.stop(self.state, self.name)


def start_coredns(bed: TestBed, listen_ip: str, port: int, *, tied_to_parent: bool = False,
                  name: str = "coredns", timeout: float = 60) -> CoreDNS:
    """Starts CoreDNS on `listen_ip:port` for `bed` and returns once it reports ready
    (its informers have synced), failing with the log's tail if it does not."""
    from tests.testbed.cluster import TestBedError, http_ok, wait_for  # cluster.py imports this module

    if not (bed.pki / f"{IDENTITY}.crt").is_file():
        raise TestBedError(f"{bed.state} predates CoreDNS's client cert: restart the test bed")
    api = bed.api()
    api.create_or_replace(f"{RBAC}/clusterroles", CLUSTER_ROLE)
    api.create_or_replace(f"{RBAC}/clusterrolebindings", CLUSTER_ROLE_BINDING)
    kubeconfig = write_kubeconfig(bed.state / "kubeconfigs" / f"{name}.kubeconfig", api.server, bed.pki, IDENTITY)
    health_port, ready_port = free_ports(2)
    conf = bed.state / "coredns" / f"{name}.Corefile"
    conf.parent.mkdir(exist_ok=True)
    conf.write_text(corefile(listen_ip, port, kubeconfig, health_port, ready_port))
    processes.start(name, argv(build.ensure_built(), conf), bed.state, tied_to_parent=tied_to_parent)
    handle = CoreDNS(bed.state, name, listen_ip, port, f"http://127.0.0.1:{ready_port}/ready")

    def ready_or_dead() -> bool:
        if not processes.running(bed.state).get(name):
            raise TestBedError(f"{name} exited during start-up\n{bed.log_tail(name)}")
        return http_ok(handle.ready_url)

    try:
        wait_for(f"{name} to be ready", ready_or_dead, timeout)
    except BaseException as error:
        handle.stop()
        if isinstance(error, TimeoutError):
            raise TestBedError(f"{error}\n{bed.log_tail(name)}") from None
        raise
    return handle
