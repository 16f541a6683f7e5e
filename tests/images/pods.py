"""A rendered pool pod as a podman container: what a kubelet would do with the operator's
Deployment and ConfigMap, for the parts a container runtime enforces.

The pod's securityContext (user, group, read-only root, capabilities, privilege escalation,
seccomp), its env, command and args, and its volume mounts (the ConfigMap's files, emptyDirs
as tmpfs, the model store's claim or host path) become podman options; nothing is added
that the pod does not ask for. Pure functions of the manifests, so the rules read in one place.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

Manifest = dict[str, Any]


class UnsupportedPod(ValueError):
    """The pod asks for something this stand-in does not translate."""


def pod_spec(deployment: Manifest) -> Manifest:
    return deployment["spec"]["template"]["spec"]


def pool_manifests(manifests: list[Manifest], pool: str) -> tuple[Manifest, Manifest]:
    """(ConfigMap, Deployment) of the pool named `pool` among a workflow's rendered children."""
    by_kind = {x["kind"]: x for x in manifests if x["metadata"]["name"] == pool}
    return by_kind["ConfigMap"], by_kind["Deployment"]


def write_config_map(config_map: Manifest, folder: Path) -> Path:
    """The ConfigMap's keys as files, as a configMap volume shows them."""
    folder.mkdir(parents=True, exist_ok=True)
    for key, value in config_map["data"].items():
        (folder / key).write_text(value)
    return folder


def security_options(pod: Manifest, container: Manifest) -> list[str]:
    """The merged pod and container securityContext as podman options."""
    context = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
    uid, gid = context.get("runAsUser"), context.get("runAsGroup", context.get("runAsUser"))
    if uid is None:
        raise UnsupportedPod("the pod names no runAsUser: the image's user would decide")
    if context.get("runAsNonRoot") and uid == 0:
        raise UnsupportedPod("runAsNonRoot with runAsUser 0")
    options = ["--user", f"{uid}:{gid}"]
    if "fsGroup" in context:
        options += ["--group-add", str(context["fsGroup"])]
    if context.get("readOnlyRootFilesystem"):
        options += ["--read-only", "--read-only-tmpfs=false"]  # only the pod's own volumes are writable
    if context.get("allowPrivilegeEscalation") is False:
        options += ["--security-opt", "no-new-privileges"]
    capabilities = context.get("capabilities", {})
    options += [f"--cap-drop={name.lower()}" for name in capabilities.get("drop", [])]
    options += [f"--cap-add={name.lower()}" for name in capabilities.get("add", [])]
    seccomp = context.get("seccompProfile", {}).get("type", "RuntimeDefault")
    if seccomp != "RuntimeDefault":  # podman's default profile is the runtime default
        raise UnsupportedPod(f"seccompProfile {seccomp}")
    return options


def _volume_option(mount: Manifest, volume: Manifest, sources: Mapping[str, Path]) -> list[str]:
    target, read_only = mount["mountPath"], bool(mount.get("readOnly", False))
    if "emptyDir" in volume:
        return ["--mount", f"type=tmpfs,destination={target},tmpfs-mode=1777"]
    if not {"configMap", "persistentVolumeClaim", "hostPath"} & volume.keys():
        raise UnsupportedPod(f"volume {volume['name']}: {sorted(volume)}")
    if volume["name"] not in sources:
        raise UnsupportedPod(f"volume {volume['name']}: no host folder given for it")
    read_only = read_only or "configMap" in volume or volume.get("persistentVolumeClaim", {}).get("readOnly", False)
    return ["--volume", f"{sources[volume['name']]}:{target}:{'ro' if read_only else 'rw'}"]


def run_options(deployment: Manifest, image: str, sources: Mapping[str, Path], network: str,
                hosts: Mapping[str, str] | None = None) -> list[str]:
    """`podman run` options for the pod's (only) container. `sources`: the host folder behind
    each configMap, claim or hostPath volume by name; `hosts`: Service names to addresses,
    as cluster DNS would answer them."""
    pod = pod_spec(deployment)
    if len(pod["containers"]) != 1:
        raise UnsupportedPod("pool pods run one container")
    container = pod["containers"][0]
    volumes = {volume["name"]: volume for volume in pod.get("volumes", [])}
    options = ["--network", network, *security_options(pod, container)]
    for entry in container.get("env", []):
        if "value" not in entry:
            raise UnsupportedPod(f"env {entry['name']}: only plain values")
        options += ["--env", f"{entry['name']}={entry['value']}"]
    for mount in container.get("volumeMounts", []):
        options += _volume_option(mount, volumes[mount["name"]], sources)
    for name, address in (hosts or {}).items():
        options += ["--add-host", f"{name}:{address}"]
    command = container.get("command")
    if command:
        options += ["--entrypoint", json.dumps(command)]
    return [*options, image, *container.get("args", [])]
