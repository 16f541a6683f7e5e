"""A container's CPU limit as the kubelet enforces it: a CFS quota on the container's own
cgroup, `limits.cpu` cores' worth of each period (cgroup v1's cpu controller, or v2's
cpu.max).

On the fleet a pod with a CPU limit is a replica with a device of its own speed, as a GPU is:
pods whose limits add up to less than the machine's cores do not slow each other down. The
kubelet runs pods under a `kubepods` cgroup weighted for the node's allocatable cores, away
from the system's daemons; here the test bed's daemons and the load client run in the root
cgroup, where the kernel's autogroups weigh each of their sessions as much as the whole
fleet group at the default weight. So the fleet's group gets the highest weight: its pods run
at their limits' speed however busy the machine is.
"""
from __future__ import annotations

import contextlib
import time
import uuid
from pathlib import Path
from typing import Any

from kubernetes.utils import parse_quantity

CGROUPS = Path("/sys/fs/cgroup")
GROUP = "swiftdiffusion-fleet"
# kubelet's --cpu-cfs-quota-period defaults to 100 ms; 10 ms here, so a throttled process
# runs in slices shorter than one denoising step and a step's time is its CPU time / limit.
PERIOD_US = 10_000
HIGHEST_SHARES, HIGHEST_WEIGHT = 262_144, 10_000  # cgroup v1 cpu.shares, v2 cpu.weight


class CpuLimitError(RuntimeError):
    """A CPU limit this machine cannot enforce."""


def limit_cores(container: dict[str, Any]) -> float | None:
    """The container's `resources.limits.cpu` in cores, or None without one."""
    value = container.get("resources", {}).get("limits", {}).get("cpu")
    return None if value is None else float(parse_quantity(value))


def _controller() -> Path:
    """Where this machine's cpu controller lives: the v1 hierarchy, else the unified one."""
    if (CGROUPS / "cpu" / "cpu.cfs_quota_us").exists():
        return CGROUPS / "cpu"
    unified = CGROUPS / "cgroup.controllers"
    if unified.exists() and "cpu" in unified.read_text().split():
        return CGROUPS
    raise CpuLimitError("this machine has no cgroup cpu controller to enforce it with")


def create(name: str, cores: float) -> Path:
    """A cgroup holding `cores` per period; returns its `cgroup.procs`, where a process writes
    its pid to join it (children follow)."""
    root = _controller()
    parent, group = root / GROUP, root / GROUP / name
    group.mkdir(parents=True, exist_ok=True)
    quota = max(1000, round(cores * PERIOD_US))  # the kernel's floor is 1 ms
    if (group / "cpu.cfs_quota_us").exists():
        (parent / "cpu.shares").write_text(str(HIGHEST_SHARES))
        (group / "cpu.cfs_period_us").write_text(str(PERIOD_US))
        (group / "cpu.cfs_quota_us").write_text(str(quota))
    else:
        for level in (root, parent):
            (level / "cgroup.subtree_control").write_text("+cpu")
        (parent / "cpu.weight").write_text(str(HIGHEST_WEIGHT))
        (group / "cpu.max").write_text(f"{quota} {PERIOD_US}")
    return group / "cgroup.procs"


def remove(procs: Path, timeout: float = 5.0) -> None:
    """The cgroup gone. The kernel refuses it until its last process has exited, which
    trails a kill by a moment: try again until then, or leave it after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            procs.parent.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            if time.monotonic() > deadline:
                return
            time.sleep(0.05)


def sweep(parent: Path | None = None) -> list[str]:
    """Removes the empty cgroups of pods that a fleet killed outright (SIGKILL) left behind
    under `parent` (the fleet's group), and returns their names. Pod cgroups are named by the
    pod's UID; any other group, and a pod group still holding a process, stays. Run by a
    fleet's kubelet as it starts, before it makes pods of its own: only one fleet runs on a
    machine at a time."""
    if parent is None:
        try:
            parent = _controller() / GROUP
        except CpuLimitError:
            return []
    removed = []
    for group in parent.iterdir() if parent.is_dir() else ():
        if group.is_dir() and _is_uid(group.name):
            with contextlib.suppress(OSError):
                group.rmdir()
                removed.append(group.name)
    return removed


def _is_uid(name: str) -> bool:
    try:
        return str(uuid.UUID(name)) == name
    except ValueError:
        return False


def joining(procs: Path, argv: list[str]) -> list[str]:
    """`argv` run inside the cgroup whose `cgroup.procs` is `procs` (joined before exec)."""
    return ["/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"', str(procs), *argv]
