"""A pod's container as a local process: what to run, with which environment and mounts.

Pure functions of the pod object and of where its volumes were prepared, so the rules
(downward API, volume mounts, the stand-in's own additions) are tested without a cluster.
The process gets its own mount namespace, in which the pod's volumes, its resolv.conf
and its emptyDirs appear at the paths the pod spec names; the network is shared (each
pod binds its own address instead, see network.py).
"""
from __future__ import annotations

import math
import os
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes.utils import parse_quantity

from swiftdiffusion.runtime.config import BIND_ADDRESS_ENV
from tests.testbed.fleet import cpu

# Where paths that an emptyDir would hide are parked while it is mounted over them.
STAGING = Path("/run/swiftdiffusion-fleet")
# What the "image" of a stand-in container is: this checkout and its interpreter.
IMAGE_PATHS = (Path(__file__).resolve().parents[3], Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve())


class ContainerConfigError(ValueError):
    """The pod asks for something a container cannot be started with (kubelet's
    CreateContainerConfigError)."""


@dataclass(frozen=True)
class Mount:
    target: str
    source: Path | None  # None: a fresh tmpfs (an emptyDir)
    read_only: bool = False


@dataclass(frozen=True)
class Launch:
    argv: list[str]
    env: dict[str, str]
    mounts: list[Mount] = field(default_factory=list)
    cpu_limit: float | None = None  # cores (resources.limits.cpu)


def _field(pod: dict[str, Any], path: str, pod_ip: str) -> str:
    values = {
        "metadata.name": pod["metadata"]["name"],
        "metadata.namespace": pod["metadata"]["namespace"],
        "metadata.uid": pod["metadata"]["uid"],
        "spec.nodeName": pod["spec"].get("nodeName", ""),
        "spec.serviceAccountName": pod["spec"].get("serviceAccountName", "default"),
        "status.podIP": pod_ip,
    }
    if path not in values:
        raise ContainerConfigError(f"fieldRef {path} is not supported by the fleet's kubelet")
    return values[path]


def _resource(container: dict[str, Any], ref: dict[str, Any]) -> str:
    """The CPU limit in units of `divisor`, rounded up as the kubelet rounds it; an unset limit
    is the node's allocatable CPU, here this machine's cores."""
    if ref.get("resource") != "limits.cpu":
        raise ContainerConfigError(f"resourceFieldRef {ref.get('resource')} is not supported by the fleet's kubelet")
    cores = cpu.limit_cores(container) or float(len(os.sched_getaffinity(0)))
    return str(max(1, math.ceil(cores / float(parse_quantity(ref.get("divisor", "1"))))))


def environment(pod: dict[str, Any], container: dict[str, Any], pod_ip: str) -> dict[str, str]:
    """The container's env, then the stand-in's: its interpreter first on PATH, one intra-op
    thread per process unless the pod says otherwise (the node's two cores are shared by
    every pod), and the pod's address to bind, as its own network namespace would give it."""
    env: dict[str, str] = {}
    for entry in container.get("env", []):
        if "value" in entry:
            env[entry["name"]] = entry["value"]
        elif "fieldRef" in entry.get("valueFrom", {}):
            env[entry["name"]] = _field(pod, entry["valueFrom"]["fieldRef"]["fieldPath"], pod_ip)
        elif "resourceFieldRef" in entry.get("valueFrom", {}):
            env[entry["name"]] = _resource(container, entry["valueFrom"]["resourceFieldRef"])
        else:
            raise ContainerConfigError(f"env {entry['name']}: only values, fieldRefs and resourceFieldRefs are supported")
    return {
        "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
        "OMP_NUM_THREADS": "1",
        **env,
        BIND_ADDRESS_ENV: pod_ip,
    }


def mounts(container: dict[str, Any], volumes: dict[str, Path | None]) -> list[Mount]:
    """`volumes`: each pod volume's prepared host folder (None for an emptyDir)."""
    out = []
    for mount in container.get("volumeMounts", []):
        if mount["name"] not in volumes:
            raise ContainerConfigError(f"volumeMount {mount['name']} names no volume of the pod")
        out.append(Mount(mount["mountPath"], volumes[mount["name"]], bool(mount.get("readOnly", False))))
    return out


def launch(pod: dict[str, Any], pod_ip: str, volumes: dict[str, Path | None],
           image: dict[str, Path] | None = None) -> Launch:
    """The first container's process (pools run one container per pod). `image`: what the
    container's image would hold (mount path -> host folder), shadowed by the pod's volumes."""
    container = pod["spec"]["containers"][0]
    argv = [*container.get("command", []), *container.get("args", [])]
    if not argv:
        raise ContainerConfigError("the fleet's kubelet has no image entrypoint: the container needs a command")
    own = mounts(container, volumes)
    targets = {m.target for m in own}
    from_image = [Mount(target, source, read_only=True) for target, source in (image or {}).items() if target not in targets]
    return Launch(argv, environment(pod, container, pod_ip), from_image + own, cpu.limit_cores(container))


def _under(path: Path, folder: str) -> bool:
    return path == Path(folder) or Path(folder) in path.parents


def namespaced_argv(spec: Launch, resolv_conf: Path, cgroup_procs: Path | None = None) -> list[str]:
    """`unshare` into a private mount namespace, join the CPU limit's cgroup (`cgroup_procs`),
    mount the volumes, exec the command.

    Bind mounts go first (their sources may lie where an emptyDir is mounted next); what
    the process itself runs from is parked in STAGING while an emptyDir covers it, then
    moved back on top.
    """
    tmpfs_targets = [m.target for m in spec.mounts if m.source is None]
    kept = [p for p in IMAGE_PATHS if any(_under(p, t) for t in tmpfs_targets)]
    kept = [p for p in kept if not any(q != p and q in p.parents for q in kept)]
    lines = ["set -e"]
    if cgroup_procs is not None:
        lines.append(f"echo $$ > {shlex.quote(str(cgroup_procs))}")
    for index, path in enumerate(kept):
        lines += [f"mkdir -p {STAGING}/keep-{index}", f"mount --bind {shlex.quote(str(path))} {STAGING}/keep-{index}"]
    for mount in spec.mounts:
        if mount.source is not None:
            target = shlex.quote(mount.target)
            lines.append(f"mount --bind {shlex.quote(str(mount.source))} {target}")
            if mount.read_only:
                lines.append(f"mount -o remount,bind,ro {target}")
    lines.append(f"mount --bind {shlex.quote(str(resolv_conf))} /etc/resolv.conf")
    for target in tmpfs_targets:
        lines.append(f"mount -t tmpfs -o mode=1777 tmpfs {shlex.quote(target)}")
    for index, path in enumerate(kept):
        lines += [f"mkdir -p {shlex.quote(str(path))}", f"mount --move {STAGING}/keep-{index} {shlex.quote(str(path))}"]
    lines.append('exec "$@"')
    return ["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", "\n".join(lines), "pod", *spec.argv]


def mount_points(spec: Launch) -> list[Path]:
    """Folders that must exist on the host for the namespace's mounts to land on."""
    return [Path(m.target) for m in spec.mounts] + [STAGING]
