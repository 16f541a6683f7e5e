"""The test bed's lifecycle: `up` starts etcd, the control plane and kwok on free
loopback ports and registers the fake GPU nodes; `down` stops all of it.

Everything lives in one state directory (certs, etcd data, kubeconfigs, logs, pids,
the chosen ports in testbed.json), so any process can find and stop a test bed.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.testbed import build, nodes, processes
from tests.testbed.api import ApiClient
from tests.testbed.kubeconfig import write_kubeconfig
from tests.testbed.pki import SERVICE_IP, make_pki

DEFAULT_STATE = "/tmp/swiftdiffusion-testbed"
MARKER = "testbed.json"
# Started in this order, stopped in reverse: each needs the ones before it.
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
PORTS = ("etcd-client", "etcd-peer", "apiserver", "controller-manager", "scheduler")
OWNED = (MARKER, "kubeconfig", "pki", "etcd-data", "kubeconfigs", "logs", "pids", "kwok-home", "certs")


class TestBedError(RuntimeError):
    """The test bed did not come up; the message ends with the failing component's log."""


def default_state_dir() -> Path:
    return Path(os.environ.get("SWIFTDIFFUSION_TESTBED_DIR", DEFAULT_STATE))


def wait_for(what: str, check: Callable[[], bool], timeout: float, interval: float = 0.25) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TestBedError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


@dataclass(frozen=True)
class TestBed:
    state: Path

    @property
    def kubeconfig(self) -> Path:
        return self.state / "kubeconfig"

    @property
    def pki(self) -> Path:
        return self.state / "pki"

    def ports(self) -> dict[str, int]:
        return json.loads((self.state / MARKER).read_text())["ports"]

    def api(self) -> ApiClient:
        return ApiClient(
            f"https://127.0.0.1:{self.ports()['apiserver']}",
            self.pki / "ca.crt", self.pki / "admin.crt", self.pki / "admin.key",
        )

    def is_up(self) -> bool:
        """All five daemons alive and the apiserver ready."""
        if not (self.state / MARKER).is_file():
            return False
        alive = processes.running(self.state)
        return all(alive.get(name) for name in COMPONENTS) and self.api().ready()

    def up(self, *, tied_to_parent: bool = False, log=sys.stderr) -> Path:
        """Starts the test bed (or finds it already up) and returns its admin kubeconfig."""
        if self.is_up():
            print(f"testbed: already up in {self.state}", file=log, flush=True)
            return self.kubeconfig
        self.down()
        bin_dir = build.ensure_built(log)
        self._reset_state()
        ports = dict(zip(PORTS, processes.free_ports(len(PORTS)), strict=True))
        (self.state / MARKER).write_text(json.dumps({"ports": ports, "bin": str(bin_dir)}, indent=2))
        make_pki(self.pki)
        started = time.monotonic()
        try:
            self._start_control_plane(bin_dir, ports, tied_to_parent)
            self._register_nodes(tied_to_parent, bin_dir)
        except BaseException:
            self.down()
            raise
        print(f"testbed: up in {time.monotonic() - started:.1f} s", file=log, flush=True)
        return self.kubeconfig

    def down(self) -> None:
        """Stops every process this state directory recorded, newest first."""
        if self.state.is_dir():
            processes.stop_all(self.state, list(reversed(COMPONENTS)))

    def _reset_state(self) -> None:
        if self.state.is_dir() and not (self.state / MARKER).exists() and any(self.state.iterdir()):
            raise TestBedError(f"{self.state} is not empty and holds no test bed; choose another state dir")
        for name in OWNED:
            path = self.state / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
        self.state.mkdir(parents=True, exist_ok=True)

    def _start(self, name: str, argv: list[str], tied_to_parent: bool, env: dict[str, str] | None = None) -> None:
        processes.start(name, argv, self.state, tied_to_parent=tied_to_parent, env=env)

    def _wait(self, name: str, what: str, check: Callable[[], bool], timeout: float) -> None:
        """Waits for `check`, failing fast with the log's tail if `name` died meanwhile."""
        def healthy_or_dead() -> bool:
            if not processes.running(self.state).get(name):
                raise TestBedError(f"{name} exited during start-up\n{self.log_tail(name)}")
            return check()
        try:
            wait_for(what, healthy_or_dead, timeout)
        except TestBedError as error:
            if "exited" in str(error):
                raise
            raise TestBedError(f"{error}\n{self.log_tail(name)}") from None

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.state / "logs" / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def _start_control_plane(self, bin_dir: Path, ports: dict[str, int], tied: bool) -> None:
        pki, state = self.pki, self.state
        etcd_url = f"http://127.0.0.1:{ports['etcd-client']}"
        peer_url = f"http://127.0.0.1:{ports['etcd-peer']}"
        self._start("etcd", [
            str(bin_dir / "etcd"), "--name=testbed", f"--data-dir={state / 'etcd-data'}",
            f"--listen-client-urls={etcd_url}", f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}", f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=testbed={peer_url}", "--unsafe-no-fsync=true", "--log-level=warn",
        ], tied)
        self._wait("etcd", "etcd health", lambda: _http_ok(f"{etcd_url}/health"), 60)

        server = f"https://127.0.0.1:{ports['apiserver']}"
        self._start("kube-apiserver", [
            str(bin_dir / "kube-apiserver"),
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={ports['apiserver']}",
            # Endpoints may not hold loopback addresses, so the `kubernetes` Service keeps none.
            "--endpoint-reconciler-type=none",
            f"--tls-cert-file={pki / 'apiserver.crt'}", f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            "--allow-privileged=true",
            f"--service-cluster-ip-range={SERVICE_IP.rsplit('.', 1)[0]}.0/24",
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
            f"--cert-dir={state / 'certs'}",
            "--profiling=false",
        ], tied)
        write_kubeconfig(self.kubeconfig, server, pki, "admin")
        self._wait("kube-apiserver", "kube-apiserver /readyz", self.api().ready, 180)

        configs = state / "kubeconfigs"
        for name in ("kube-controller-manager", "kube-scheduler"):
            config = write_kubeconfig(configs / f"{name}.kubeconfig", server, pki, name)
            common = [
                f"--kubeconfig={config}", f"--authentication-kubeconfig={config}",
                f"--authorization-kubeconfig={config}", "--bind-address=127.0.0.1",
                f"--cert-dir={state / 'certs' / name}", "--leader-elect=false",
            ]
            port = ports["controller-manager" if name == "kube-controller-manager" else "scheduler"]
            extra = [
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--root-ca-file={pki / 'ca.crt'}",
                "--use-service-account-credentials=true",
                f"--cluster-signing-cert-file={pki / 'ca.crt'}",
                f"--cluster-signing-key-file={pki / 'ca.key'}",
                "--cluster-name=swiftdiffusion-testbed",
            ] if name == "kube-controller-manager" else []
            self._start(name, [str(bin_dir / name), *common, f"--secure-port={port}", *extra], tied)

    def _register_nodes(self, tied: bool, bin_dir: Path) -> None:
        config = write_kubeconfig(self.state / "kubeconfigs" / "kwok.kubeconfig", self.api().server, self.pki, "kwok")
        home = self.state / "kwok-home"  # kwok also reads ~/.kwok/kwok.yaml: keep it private
        home.mkdir()
        self._start("kwok", [
            str(bin_dir / "kwok"), f"--kubeconfig={config}", f"--config={bin_dir / build.KWOK_STAGES}",
            f"--manage-nodes-with-annotation-selector={nodes.KWOK_ANNOTATION}={nodes.KWOK_ANNOTATION_VALUE}",
            "--node-ip=127.0.0.1", "--node-lease-duration-seconds=40", "--cidr=10.244.0.1/16",
        ], tied, env={**os.environ, "HOME": str(home)})
        api = self.api()
        wanted = nodes.gpu_nodes()
        for node in wanted:
            api.create_or_replace("/api/v1/nodes", node)
        names = {node["metadata"]["name"] for node in wanted}

        def all_ready() -> bool:
            listed = api.request("GET", "/api/v1/nodes")["items"]
            return names <= {n["metadata"]["name"] for n in listed if nodes.is_ready(n)}

        self._wait("kwok", "the fake GPU nodes to be Ready", all_ready, 90)
        for name in COMPONENTS:
            if not processes.running(self.state).get(name):
                raise TestBedError(f"{name} exited during start-up\n{self.log_tail(name)}")


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (OSError, urllib.error.URLError):
        return False
