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
from typing import Any, TextIO

from tests.testbed import build, components, nodes, processes
from swiftdiffusion.runtime.dev.ports import free_ports
from tests.testbed.api import ApiClient
from tests.testbed.dns import start_coredns
from tests.testbed.fleet.network import FleetNetwork, ensure_local_routes
from tests.testbed.kubeconfig import write_kubeconfig
from tests.testbed.pki import make_pki

DEFAULT_STATE = "/tmp/swiftdiffusion-testbed"
REPO = Path(__file__).resolve().parents[2]
MARKER = "testbed.json"
# Started in this order, stopped in reverse: each needs the ones before it.
CONTROL_PLANE = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
COMPONENTS = (*CONTROL_PLANE, "kwok")
# A fleet's nodes run real pods: its kubelet stand-in replaces kwok, and pods need DNS; its
# pools autoscale on Prometheus through KEDA.
FLEET_COMPONENTS = (*CONTROL_PLANE, "coredns", "kubelet", "prometheus", "keda-operator", "keda-adapter")
PORTS = ("etcd-client", "etcd-peer", "apiserver", "controller-manager", "scheduler")
OWNED = (MARKER, "kubeconfig", "pki", "etcd-data", "kubeconfigs", "logs", "pids", "kwok-home", "certs", "fleet", "coredns",
         "prometheus", "keda")


class TestBedError(RuntimeError):
    """The test bed did not come up; the message ends with the failing component's log."""

    __test__ = False  # a name pytest would otherwise try to collect


def default_state_dir() -> Path:
    return Path(os.environ.get("SWIFTDIFFUSION_TESTBED_DIR", DEFAULT_STATE))


def wait_for(what: str, check: Callable[[], bool], timeout: float, interval: float = 0.25) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


@dataclass(frozen=True)
class TestBed:
    """One test bed, identified by its state directory.

    `fleet`: its GPU nodes run the pods for real (tests/testbed/fleet) instead of kwok
    faking them; it needs root (local routes, mount namespaces, DNS on port 53).
    """

    __test__ = False  # a name pytest would otherwise try to collect
    state: Path
    fleet: bool = False

    @property
    def kubeconfig(self) -> Path:
        return self.state / "kubeconfig"

    @property
    def pki(self) -> Path:
        return self.state / "pki"

    @property
    def model_store(self) -> Path:
        """A fleet's model store: a PersistentVolume's hostPath, and what its image holds."""
        return self.state / "fleet" / "models"

    def marker(self) -> dict[str, Any]:
        return json.loads((self.state / MARKER).read_text())

    def ports(self) -> dict[str, int]:
        return self.marker()["ports"]

    @property
    def components(self) -> tuple[str, ...]:
        return FLEET_COMPONENTS if self.fleet else COMPONENTS

    def network(self) -> FleetNetwork:
        return FleetNetwork(self.marker()["fleet"]["network"])

    def prometheus_url(self) -> str:
        """A fleet's Prometheus (tests/testbed/fleet/prometheus.py), for pods and this machine."""
        return f"http://{self.network().prometheus_address}"

    def api(self) -> ApiClient:
        server = f"https://127.0.0.1:{self.ports()['apiserver']}"
        return ApiClient(server, self.pki / "ca.crt", self.pki / "admin.crt", self.pki / "admin.key")

    def is_up(self) -> bool:
        """All its daemons alive and the apiserver ready."""
        if not (self.state / MARKER).is_file():
            return False
        alive = processes.running(self.state)
        return all(alive.get(name) for name in self.components) and self.api().ready()

    def up(self, *, tied_to_parent: bool = False, log: TextIO = sys.stderr) -> Path:
        """Starts the test bed (or finds it already up) and returns its admin kubeconfig."""
        if self.is_up():
            print(f"testbed: already up in {self.state}", file=log, flush=True)
            return self.kubeconfig
        self.down()
        bin_dir = build.ensure_built(log)
        self._reset_state()
        ports = dict(zip(PORTS, free_ports(len(PORTS)), strict=True))
        marker: dict[str, Any] = {"ports": ports, "bin": str(bin_dir)}
        network = FleetNetwork.pick() if self.fleet else None
        if network is not None:
            ensure_local_routes()
            marker["fleet"] = {"network": network.index}
        (self.state / MARKER).write_text(json.dumps(marker, indent=2))
        started = time.monotonic()
        if network is None:
            make_pki(self.pki)
            at = components.Layout(bin_dir, self.state, ports)
        else:
            make_pki(self.pki, network.apiserver_service_ip)
            at = components.Layout(bin_dir, self.state, ports, network.service_cidr)
        write_kubeconfig(self.kubeconfig, at.server, self.pki, "admin")
        for identity in ("kube-controller-manager", "kube-scheduler", "kwok"):
            write_kubeconfig(at.kubeconfig(identity), at.server, self.pki, identity)
        try:
            self._start_control_plane(at, tied_to_parent)
            self._register_nodes()
        except BaseException:
            self.down()
            raise
        print(f"testbed: up in {time.monotonic() - started:.1f} s", file=log, flush=True)
        return self.kubeconfig

    def down(self) -> None:
        """Stops every process this state directory recorded, newest first."""
        if self.state.is_dir():
            processes.stop_all(self.state, ["operator", "keda-adapter", "keda-operator", "prometheus", "kubelet",
                                            "kwok", "coredns", *reversed(CONTROL_PLANE)])

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
            self._check_alive(name)
            return check()
        try:
            wait_for(what, healthy_or_dead, timeout)
        except TimeoutError as error:
            raise TestBedError(f"{error}\n{self.log_tail(name)}") from None

    def _check_alive(self, name: str) -> None:
        if not processes.running(self.state).get(name):
            raise TestBedError(f"{name} exited during start-up\n{self.log_tail(name)}")

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.state / "logs" / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def _start_control_plane(self, at: components.Layout, tied: bool) -> None:
        self._start("etcd", components.etcd(at), tied)
        self._wait("etcd", "etcd health", lambda: http_ok(f"{at.etcd_url}/health"), 60)
        self._start("kube-apiserver", components.kube_apiserver(at), tied)
        self._wait("kube-apiserver", "kube-apiserver /readyz", self.api().ready, 180)
        self._start("kube-controller-manager", components.kube_controller_manager(at), tied)
        self._start("kube-scheduler", components.kube_scheduler(at), tied)
        if self.fleet:
            self._start_fleet(tied)
            return
        home = self.state / "kwok-home"  # kwok also reads ~/.kwok/kwok.yaml: keep it private
        home.mkdir()
        self._start("kwok", components.kwok(at), tied, env={**os.environ, "HOME": str(home)})

    def _start_fleet(self, tied: bool) -> None:
        """CoreDNS on the cluster DNS address, then the kubelet stand-in (in this
        interpreter: its pods run this checkout's runtime), Prometheus scraping the runtime
        pods, and KEDA serving the external metrics API to the HPA controller (its two
        processes restarted when they exit, as its Deployments' pods are)."""
        from tests.testbed.fleet import keda, prometheus  # they need the venv (PyYAML); the rest does not

        start_coredns(self, self.network().dns_ip, 53, tied_to_parent=tied)
        self._start("kubelet", [sys.executable, "-m", "tests.testbed.fleet", str(self.state)], tied,
                    env={**os.environ, "PYTHONPATH": str(REPO)})
        self._start("prometheus", prometheus.install(self), tied)
        keda.install(self)
        supervised = {**keda.environment(self), "PYTHONPATH": str(REPO)}  # restarted as their pods would be
        self._start("keda-operator", processes.supervised(keda.operator_argv(self)), tied, env=supervised)
        self._start("keda-adapter", processes.supervised(keda.adapter_argv(self)), tied, env=supervised)
        self._wait("prometheus", "Prometheus to be ready", lambda: http_ok(f"{self.prometheus_url()}/-/ready"), 60)
        self._wait("keda-adapter", f"APIService {keda.API_SERVICE} to be Available", lambda: keda.available(self.api()),
                   120)

    def _register_nodes(self) -> None:
        api = self.api()
        if self.fleet:
            wanted, player = nodes.gpu_nodes(nodes.FLEET_POOLS), "kubelet"  # it registers them itself
        else:
            wanted, player = nodes.gpu_nodes(), "kwok"
            for node in wanted:
                api.create_or_replace("/api/v1/nodes", node)
        names = {node["metadata"]["name"] for node in wanted}

        def all_ready() -> bool:
            listed = api.request("GET", "/api/v1/nodes")["items"]
            return names <= {n["metadata"]["name"] for n in listed if nodes.is_ready(n)}

        self._wait(player, "the GPU nodes to be Ready", all_ready, 90)
        for name in self.components:
            self._check_alive(name)


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (OSError, urllib.error.URLError):
        return False
