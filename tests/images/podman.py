"""podman with the project's settings (scripts/images podman), and the images it builds.

Every call goes through scripts/images, so the tests run containers exactly as a developer
does by hand: the same storage, runtime (runc), cgroup manager and ulimits.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "images"


def podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(SCRIPT), "podman", *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args)}: exit {result.returncode}: {result.stderr.strip()}")
    return result


def build_images(timeout: float = 3000) -> dict[str, str]:
    """Both images (cached: a build with no change returns at once), installing podman and
    making the offline base image first when this machine has neither; name -> reference."""
    if shutil.which("podman") is None and os.geteuid() != 0:
        raise RuntimeError("podman is not installed and installing it needs root: run `scripts/images install` as root")
    result = subprocess.run([str(SCRIPT), "build"], capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"scripts/images build failed (exit {result.returncode}):\n{result.stderr[-4000:]}")
    return dict(line.split(" ", 1) for line in result.stdout.splitlines())


def inspect_image(ref: str) -> dict[str, Any]:
    return json.loads(podman("image", "inspect", ref).stdout)[0]


@dataclass
class Container:
    """A detached container; `remove()` stops and deletes it."""

    name: str

    def state(self) -> dict[str, Any]:
        return json.loads(podman("container", "inspect", self.name).stdout)[0]["State"]

    def ip(self, network: str) -> str:
        networks = json.loads(podman("container", "inspect", self.name).stdout)[0]["NetworkSettings"]["Networks"]
        return networks[network]["IPAddress"]

    def logs(self) -> str:
        result = podman("logs", self.name, check=False)
        return result.stdout + result.stderr

    def wait_exit(self, timeout: float = 120) -> int:
        deadline = time.monotonic() + timeout
        while (state := self.state())["Running"]:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} still running after {timeout:.0f} s:\n{self.logs()[-3000:]}")
            time.sleep(0.5)
        return int(state["ExitCode"])

    def stop(self, timeout: int = 20) -> None:
        podman("stop", "--time", str(timeout), self.name, check=False, timeout=timeout + 30)

    def remove(self) -> None:
        podman("rm", "--force", "--time", "5", self.name, check=False, timeout=60)


def run_detached(args: list[str], name: str) -> Container:
    podman("run", "--detach", "--name", name, *args)
    return Container(name)


def network_gateway(network: str) -> str:
    """The host's address on a podman network: where containers reach a server on this machine."""
    subnets = json.loads(podman("network", "inspect", network).stdout)[0]["subnets"]
    return subnets[0]["gateway"]
