"""The pinned helm binary (built with the test bed) run against charts/swiftdiffusion."""
from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parents[2] / "charts" / "swiftdiffusion"
# `--set`s tolerating the GPU taint every test bed node carries (so the operator pod schedules).
GPU_TOLERATION = ("tolerations[0].key=nvidia.com/gpu", "tolerations[0].operator=Exists",
                  "tolerations[0].effect=NoSchedule")


@dataclass(frozen=True)
class Helm:
    """helm with its config, cache and data dirs in a private folder (no ~/.config writes)."""

    binary: Path
    home: Path

    def run(self, *args: str, kube_config: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "HELM_CACHE_HOME": str(self.home / "cache"), "HELM_CONFIG_HOME": str(self.home / "config"),
               "HELM_DATA_HOME": str(self.home / "data")}
        if kube_config:
            env["KUBECONFIG"] = kube_config
        result = subprocess.run([str(self.binary), *args], env=env, capture_output=True, text=True, timeout=300)
        if check and result.returncode:
            raise AssertionError(f"helm {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
        return result

    def template(self, *set_args: str, release: str = "swd",
                 namespace: str = "swiftdiffusion-system") -> list[dict[str, Any]]:
        """The rendered objects (without CRDs), for `--set`-style overrides."""
        overrides = [arg for value in set_args for arg in ("--set", value)]
        out = self.run("template", release, str(CHART), "--namespace", namespace, *overrides).stdout
        return [doc for doc in yaml.safe_load_all(out) if doc]


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = by_kind(objects, kind)
    return found
