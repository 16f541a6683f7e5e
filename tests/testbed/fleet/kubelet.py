"""A kubelet stand-in: the fleet's GPU nodes, whose pods run as real processes.

For each node it keeps the Node Ready (status and Lease heartbeats, as a kubelet does, so
the node lifecycle controller neither taints nor evicts). For each pod bound to one of
its nodes it prepares the volumes, starts the container's process on the pod's address,
reports the pod's status (IP, container state, restarts, the Ready condition from the
pod's own probes), restarts a container that exits (with back-off, as CrashLoopBackOff),
and on deletion runs the preStop sleep, sends SIGTERM, waits the grace period, and
removes the pod. Failures a user must see become Warning events on the pod, as
`kubectl describe` shows them.

It polls the API server (every POLL_SECONDS) instead of watching: a handful of pods on a
loopback API server, and no reconnect logic to get wrong.
"""
from __future__ import annotations

import contextlib
import datetime
import signal
import socket
import subprocess
import threading
import time
import urllib.error
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from swiftdiffusion.runtime.serving.grpc_common import check_health
from tests.testbed import nodes, processes
from tests.testbed.api import ApiClient
from tests.testbed.fleet import container, cpu
from tests.testbed.fleet.network import FleetNetwork, resolv_conf

POLL_SECONDS = 0.5
HEARTBEAT_SECONDS = 10
LEASE_SECONDS = 40
BACKOFF_SECONDS = (10, 20, 40, 80, 160, 300)
LOG_TAIL_LINES = 20
NODE_IP = "127.0.0.1"


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def pod_path(pod: dict[str, Any]) -> str:
    return f"/api/v1/namespaces/{pod['metadata']['namespace']}/pods/{pod['metadata']['name']}"


def fleet_node(pool: nodes.GpuPool, index: int) -> dict[str, Any]:
    """A GPU node like the test bed's, but not kwok's: this process plays its kubelet."""
    node = nodes.gpu_node(pool, index)
    del node["metadata"]["annotations"][nodes.KWOK_ANNOTATION]
    node["metadata"]["labels"]["type"] = "fleet"
    node["status"]["nodeInfo"]["kubeletVersion"] = "fleet-stand-in"
    return node


class VolumeError(RuntimeError):
    """A volume that cannot be mounted (kubelet's FailedMount)."""


@dataclass
class Probe:
    """One of the container's probes, with kubelet's counting rules."""

    spec: dict[str, Any]
    failures: int = 0
    successes: int = 0
    due: float = 0.0

    @property
    def period(self) -> float:
        return float(self.spec.get("periodSeconds", 10))

    def check(self, pod_ip: str) -> bool:
        timeout = float(self.spec.get("timeoutSeconds", 1))
        if "grpc" in self.spec:
            return check_health(f"{pod_ip}:{self.spec['grpc']['port']}", timeout=max(timeout, 1.0))
        if "tcpSocket" in self.spec:
            try:
                with socket.create_connection((pod_ip, int(self.spec["tcpSocket"]["port"])), timeout=timeout):
                    return True
            except OSError:
                return False
        raise container.ContainerConfigError(f"probe {sorted(self.spec)} is not supported by the fleet's kubelet")

    def run(self, pod_ip: str) -> bool | None:
        """None while not due; else True/False once its threshold says so (kubelet semantics:
        failureThreshold consecutive failures, successThreshold consecutive successes)."""
        moment = time.monotonic()
        if moment < self.due:
            return None
        self.due = moment + self.period
        if self.check(pod_ip):
            self.failures, self.successes = 0, self.successes + 1
            return True if self.successes >= int(self.spec.get("successThreshold", 1)) else None
        self.successes, self.failures = 0, self.failures + 1
        return False if self.failures >= int(self.spec.get("failureThreshold", 3)) else None


@dataclass
class PodWorker:
    """Runs one pod from start to removal, in its own thread."""

    api: ApiClient
    pod: dict[str, Any]
    ip: str
    network: FleetNetwork
    folder: Path
    image: dict[str, Path]
    process: subprocess.Popen | None = None
    cgroup: Path | None = None  # the CPU limit's cgroup.procs
    restarts: int = 0
    started: bool = False  # the startup probe passed
    ready: bool = False
    last_state: dict[str, Any] = field(default_factory=dict)
    started_at: str = ""
    thread: threading.Thread | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def uid(self) -> str:
        return self.pod["metadata"]["uid"]

    @property
    def deleting(self) -> bool:
        with self.lock:
            return bool(self.pod["metadata"].get("deletionTimestamp"))

    def update(self, pod: dict[str, Any]) -> None:
        with self.lock:
            self.pod = pod

    def start(self) -> None:
        self.thread = threading.Thread(target=self.run, name=f"pod-{self.pod['metadata']['name']}", daemon=True)
        self.thread.start()

    # -- status and events -------------------------------------------------------------

    def event(self, kind: str, reason: str, message: str) -> None:
        meta = self.pod["metadata"]
        body = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {"kind": "Pod", "apiVersion": "v1", "name": meta["name"],
                               "namespace": meta["namespace"], "uid": meta["uid"], "fieldPath": "spec.containers{runtime}"},
            "reason": reason, "message": message, "type": kind, "count": 1,
            "firstTimestamp": now(), "lastTimestamp": now(),
            "source": {"component": "kubelet", "host": self.pod["spec"].get("nodeName", "")},
        }
        with contextlib.suppress(urllib.error.URLError, OSError):
            self.api.request("POST", f"/api/v1/namespaces/{meta['namespace']}/events", body)

    def report(self, state: dict[str, Any], *, phase: str = "Running") -> None:
        name = self.pod["spec"]["containers"][0]["name"]
        ready = "True" if self.ready else "False"
        status = {
            "phase": phase,
            "hostIP": NODE_IP, "hostIPs": [{"ip": NODE_IP}],
            "podIP": self.ip, "podIPs": [{"ip": self.ip}],
            "startTime": self.pod.get("status", {}).get("startTime") or now(),
            "conditions": [
                {"type": "PodReadyToStartContainers", "status": "True", "lastTransitionTime": now()},
                {"type": "Initialized", "status": "True", "lastTransitionTime": now()},
                {"type": "ContainersReady", "status": ready, "lastTransitionTime": now()},
                {"type": "Ready", "status": ready, "lastTransitionTime": now()},
            ],
            "containerStatuses": [{
                "name": name, "image": self.pod["spec"]["containers"][0].get("image", ""),
                "imageID": "", "containerID": f"fleet://{self.process.pid}" if self.process else "",
                "ready": self.ready, "started": self.started and "running" in state, "restartCount": self.restarts,
                "state": state, "lastState": self.last_state,
            }],
        }
        with contextlib.suppress(urllib.error.HTTPError):  # 404: the pod is gone already
            self.api.patch_status(pod_path(self.pod), status)

    # -- the pod's life ------------------------------------------------------------------

    def run(self) -> None:
        try:
            spec = self.prepare()
            if spec is None:
                return
            while not self.deleting:
                self.start_process(spec)
                if self.supervise():
                    break
                if self.back_off():
                    break
            self.terminate()
        except container.ContainerConfigError as error:
            self.report({"waiting": {"reason": "CreateContainerConfigError", "message": str(error)}}, phase="Pending")
            self.event("Warning", "Failed", f"Error: {error}")
            while not self.deleting:
                time.sleep(POLL_SECONDS)
        finally:
            self.kill()
        self.remove()

    def prepare(self) -> container.Launch | None:
        """Volumes and the launch spec; retried while a volume cannot be mounted."""
        reported = False
        while not self.deleting:
            try:
                volumes = self.prepare_volumes()
            except VolumeError as error:
                if not reported:
                    self.report({"waiting": {"reason": "ContainerCreating"}}, phase="Pending")
                    self.event("Warning", "FailedMount", str(error))
                    reported = True
                time.sleep(2)
                continue
            spec = container.launch(self.pod, self.ip, volumes, self.image)
            if spec.cpu_limit is not None:
                try:
                    self.cgroup = cpu.create(self.pod["metadata"]["uid"], spec.cpu_limit)
                except (cpu.CpuLimitError, OSError) as error:
                    raise container.ContainerConfigError(f"limits.cpu: {error}") from error
            for path in container.mount_points(spec):
                path.mkdir(parents=True, exist_ok=True)
            (self.folder / "resolv.conf").write_text(resolv_conf(self.network, self.pod["metadata"]["namespace"]))
            return spec
        return None

    def prepare_volumes(self) -> dict[str, Path | None]:
        namespace = self.pod["metadata"]["namespace"]
        prepared: dict[str, Path | None] = {}
        for volume in self.pod["spec"].get("volumes", []):
            name = volume["name"]
            if "emptyDir" in volume:
                prepared[name] = None
            elif "configMap" in volume:
                prepared[name] = self._config_map(namespace, volume["configMap"], self.folder / "volumes" / name)
            elif "persistentVolumeClaim" in volume:
                prepared[name] = self._claim(namespace, volume["persistentVolumeClaim"]["claimName"], name)
            elif "hostPath" in volume:
                prepared[name] = self._host_path(volume["hostPath"]["path"], name)
            else:
                raise VolumeError(f"volume {name}: {sorted(volume)} is not supported by the fleet's kubelet")
        return prepared

    def _config_map(self, namespace: str, source: dict[str, Any], folder: Path) -> Path:
        try:
            data = self.api.request("GET", f"/api/v1/namespaces/{namespace}/configmaps/{source['name']}")["data"]
        except urllib.error.HTTPError as error:
            raise VolumeError(f'MountVolume.SetUp failed for volume "{source["name"]}": configmap not found') from error
        folder.mkdir(parents=True, exist_ok=True)
        items = source.get("items") or [{"key": key, "path": key} for key in data]
        for item in items:
            (folder / item["path"]).write_text(data[item["key"]])
        return folder

    def _claim(self, namespace: str, claim: str, volume: str) -> Path:
        try:
            bound = self.api.request("GET", f"/api/v1/namespaces/{namespace}/persistentvolumeclaims/{claim}")
            persistent = self.api.request("GET", f"/api/v1/persistentvolumes/{bound['spec']['volumeName']}")
        except (urllib.error.HTTPError, KeyError) as error:
            raise VolumeError(f'MountVolume.SetUp failed for volume "{volume}": claim {claim} is not bound') from error
        spec = persistent["spec"]
        path = (spec.get("hostPath") or spec.get("local") or {}).get("path")
        if path is None:
            raise VolumeError(f'volume "{volume}": the fleet mounts only hostPath and local PersistentVolumes')
        return self._host_path(path, volume)

    @staticmethod
    def _host_path(path: str, volume: str) -> Path:
        if not Path(path).exists():
            raise VolumeError(f'MountVolume.SetUp failed for volume "{volume}": hostPath {path} does not exist')
        return Path(path)

    def start_process(self, spec: container.Launch) -> None:
        log = (self.folder / "runtime.log").open("ab")
        self.process = processes.popen_tied(
            container.namespaced_argv(spec, self.folder / "resolv.conf", self.cgroup), env=spec.env, cwd="/",
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.started_at = now()
        self.ready = False
        self.report({"running": {"startedAt": self.started_at}})
        self.event("Normal", "Started", f"Started container (pid {self.process.pid}) on {self.ip}")

    def supervise(self) -> bool:
        """Probes until the process ends (False) or the pod is deleted (True)."""
        assert self.process is not None
        probes = self.pod["spec"]["containers"][0]
        startup = Probe(probes["startupProbe"]) if "startupProbe" in probes else None
        readiness = Probe(probes["readinessProbe"]) if "readinessProbe" in probes else None
        liveness = Probe(probes["livenessProbe"]) if "livenessProbe" in probes else None
        self.started = startup is None
        while self.process.poll() is None:
            if self.deleting:
                return True
            if not self.started:
                outcome = startup.run(self.ip)
                self.started = bool(outcome)
                if self.started:
                    self.report({"running": {"startedAt": self.started_at}})
                if outcome is False:
                    self.event("Warning", "Unhealthy", "Startup probe failed: the container will be restarted")
                    self.stop_process(signal.SIGTERM)
                    break
            else:
                ready = readiness.run(self.ip) if readiness else True
                if ready is not None and ready != self.ready:
                    self.ready = ready
                    self.report({"running": {"startedAt": self.started_at}})
                    if not ready:
                        self.event("Warning", "Unhealthy", "Readiness probe failed: NOT_SERVING or no answer")
                if liveness and liveness.run(self.ip) is False:
                    self.event("Warning", "Unhealthy", "Liveness probe failed: the container will be restarted")
                    self.stop_process(signal.SIGTERM)
                    break
            time.sleep(0.2)
        self.ready = self.started = False
        return False

    def back_off(self) -> bool:
        """Records the exit, waits the back-off; True if the pod was deleted meanwhile."""
        assert self.process is not None
        code = self.process.wait()
        self.last_state = {"terminated": {
            "exitCode": code, "reason": "Completed" if code == 0 else "Error",
            "message": self.log_tail(), "startedAt": self.started_at, "finishedAt": now(),
        }}
        delay = BACKOFF_SECONDS[min(self.restarts, len(BACKOFF_SECONDS) - 1)]
        message = f"back-off {delay}s restarting failed container=runtime pod={self.pod['metadata']['name']}"
        self.report({"waiting": {"reason": "CrashLoopBackOff", "message": message}})
        self.event("Warning", "BackOff", f"Back-off restarting failed container (exit code {code})")
        self.restarts += 1
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline:
            if self.deleting:
                return True
            time.sleep(POLL_SECONDS)
        return False

    def terminate(self) -> None:
        """preStop, SIGTERM, then SIGKILL once the pod's grace period is spent."""
        with self.lock:
            grace = float(self.pod["metadata"].get("deletionGracePeriodSeconds", 30))
        deadline = time.monotonic() + grace
        container_spec = self.pod["spec"]["containers"][0]
        pre_stop = container_spec.get("lifecycle", {}).get("preStop", {})
        if self.process is not None and self.process.poll() is None and "sleep" in pre_stop:
            time.sleep(min(float(pre_stop["sleep"]["seconds"]), max(0.0, deadline - time.monotonic())))
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=max(2.0, deadline - time.monotonic()))

    def stop_process(self, sig: int) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=10)
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()

    def kill(self) -> None:
        """The container gone for good: its process killed, then its CPU cgroup removed."""
        self.stop_process(signal.SIGKILL)
        if self.cgroup is not None:
            cpu.remove(self.cgroup)

    def remove(self) -> None:
        """The kubelet's last word on a deleted pod: delete it for good (grace 0)."""
        if not self.deleting:
            return
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0,
                "preconditions": {"uid": self.uid}}
        with contextlib.suppress(urllib.error.HTTPError):  # 404 or 409: already gone
            self.api.request("DELETE", pod_path(self.pod), body)

    def log_tail(self) -> str:
        path = self.folder / "runtime.log"
        lines = path.read_text(errors="replace").splitlines() if path.exists() else []
        return "\n".join(lines[-LOG_TAIL_LINES:])


@dataclass
class Kubelet:
    """Every fleet node's kubelet, in one process."""

    api: ApiClient
    network: FleetNetwork
    state: Path
    pools: tuple[nodes.GpuPool, ...]
    image: dict[str, Path]
    workers: dict[str, PodWorker] = field(default_factory=dict)
    next_ip: int = 0
    stopping: threading.Event = field(default_factory=threading.Event)

    @property
    def node_names(self) -> set[str]:
        return {f"{pool.prefix}-{index}" for pool in self.pools for index in range(pool.count)}

    def register_nodes(self) -> None:
        for pool in self.pools:
            for index in range(pool.count):
                self.api.create_or_replace("/api/v1/nodes", fleet_node(pool, index))
        self.heartbeat()

    def heartbeat(self) -> None:
        """Node Ready with a fresh heartbeat, and its Lease renewed."""
        for name in sorted(self.node_names):
            self.api.patch_status(f"/api/v1/nodes/{name}", {
                "addresses": [{"type": "InternalIP", "address": NODE_IP}, {"type": "Hostname", "address": name}],
                "conditions": [
                    {"type": kind, "status": "False", "reason": f"Kubelet{reason}", "lastHeartbeatTime": now(),
                     "lastTransitionTime": now()}
                    for kind, reason in (("MemoryPressure", "HasSufficientMemory"), ("DiskPressure", "HasNoDiskPressure"),
                                         ("PIDPressure", "HasSufficientPID"))
                ] + [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "fleet stand-in",
                      "lastHeartbeatTime": now(), "lastTransitionTime": now()}],
            })
            lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                     "metadata": {"name": name, "namespace": "kube-node-lease"},
                     "spec": {"holderIdentity": name, "leaseDurationSeconds": LEASE_SECONDS, "renewTime": now_micro()}}
            leases = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases"
            try:
                self.api.request("PATCH", f"{leases}/{name}", {"spec": lease["spec"]},
                                 content_type="application/merge-patch+json")
            except urllib.error.HTTPError as error:
                if error.code != 404:
                    raise
                self.api.request("POST", leases, lease)

    def allocate_ip(self, pod: dict[str, Any]) -> str:
        existing = pod.get("status", {}).get("podIP")
        if existing:
            return existing
        taken = {worker.ip for worker in self.workers.values()}
        while True:
            ip = self.network.pod_ip(self.next_ip)
            self.next_ip += 1
            if ip not in taken:
                return ip

    def sync(self) -> None:
        listed = self.api.request("GET", "/api/v1/pods")["items"]
        mine = {p["metadata"]["uid"]: p for p in listed if p["spec"].get("nodeName") in self.node_names
                and p.get("status", {}).get("phase") not in ("Succeeded", "Failed")}
        for uid, pod in mine.items():
            if uid in self.workers:
                self.workers[uid].update(pod)
                continue
            folder = self.state / "pods" / f"{pod['metadata']['namespace']}_{pod['metadata']['name']}_{uid[:8]}"
            folder.mkdir(parents=True, exist_ok=True)
            worker = PodWorker(self.api, pod, self.allocate_ip(pod), self.network, folder, self.image)
            self.workers[uid] = worker
            worker.start()
        for uid in [uid for uid, worker in self.workers.items() if not worker.thread.is_alive()]:
            del self.workers[uid]
        for uid in set(self.workers) - set(mine):  # deleted with grace 0 by someone else
            self.workers[uid].update({**self.workers[uid].pod, "metadata": {
                **self.workers[uid].pod["metadata"], "deletionTimestamp": now(), "deletionGracePeriodSeconds": 0}})

    def run(self) -> None:
        if stale := cpu.sweep():
            print(f"kubelet: removed {len(stale)} empty pod cgroups a killed fleet left", flush=True)
        self.register_nodes()
        beat = time.monotonic()
        while not self.stopping.is_set():
            try:
                self.sync()
                if time.monotonic() - beat >= HEARTBEAT_SECONDS:
                    self.heartbeat()
                    beat = time.monotonic()
            except (urllib.error.URLError, OSError) as error:
                print(f"kubelet: API server: {error}", flush=True)
            self.stopping.wait(POLL_SECONDS)
        self.shutdown()

    def shutdown(self) -> None:
        """Stops every container (SIGTERM, then SIGKILL) and removes its CPU cgroup; the pods
        stay for the next start, which makes their cgroups anew."""
        for worker in list(self.workers.values()):
            if worker.process is not None and worker.process.poll() is None:
                worker.process.send_signal(signal.SIGTERM)
        for worker in list(self.workers.values()):
            worker.kill()
