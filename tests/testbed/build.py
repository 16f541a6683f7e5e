"""Builds the test bed's binaries from the pinned Go modules beside this file.

The binaries are cached outside the repository under a key made of the pinned versions
and a hash of every go.mod/go.sum, the Go version and the build flags, so a warm build
is a directory lookup and a pin change can never reuse stale binaries.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

HERE = Path(__file__).resolve().parent
BUILD_FLAGS = ("-trimpath", "-ldflags=-s -w")
BUILD_ENV = {"CGO_ENABLED": "0", "GOFLAGS": "-mod=readonly"}
# kwok ships no stages of its own: these are the ones kwokctl installs by default.
KWOK_STAGE_FILES = (
    "kustomize/stage/node/fast/node-initialize.yaml",
    "kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "kustomize/stage/pod/fast/pod-ready.yaml",
    "kustomize/stage/pod/fast/pod-complete.yaml",
    "kustomize/stage/pod/fast/pod-delete.yaml",
)
KWOK_STAGES = "kwok-stages.yaml"


@dataclass(frozen=True)
class GoModule:
    """One wrapper module under tests/testbed/: which pin names it and what it builds."""

    folder: str
    pinned: str
    binaries: dict[str, str]  # binary name -> Go package

    @property
    def path(self) -> Path:
        return HERE / self.folder

    def version(self) -> str:
        text = (self.path / "go.mod").read_text()
        match = re.search(rf"^\s*(?:require\s+)?{re.escape(self.pinned)}\s+(v\S+)", text, re.M)
        if match is None:
            raise RuntimeError(f"{self.path}/go.mod does not require {self.pinned}")
        return match.group(1)


MODULES = (
    GoModule(
        "kube",
        "k8s.io/kubernetes",
        {
            name: f"k8s.io/kubernetes/cmd/{name}"
            for name in ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
        },
    ),
    GoModule("etcd", "go.etcd.io/etcd/server/v3", {"etcd": "go.etcd.io/etcd/server/v3"}),
    GoModule("kwok", "sigs.k8s.io/kwok", {"kwok": "sigs.k8s.io/kwok/cmd/kwok"}),
    GoModule("helm", "helm.sh/helm/v3", {"helm": "helm.sh/helm/v3/cmd/helm"}),
)


def go_command() -> str:
    found = shutil.which("go") or "/usr/local/go/bin/go"
    if not os.access(found, os.X_OK):
        raise RuntimeError("the test bed needs Go (https://go.dev/doc/install) on PATH")
    return found


def go_version(go: str) -> str:
    return subprocess.run([go, "env", "GOVERSION"], check=True, capture_output=True, text=True).stdout.strip()


def cache_key(go: str) -> str:
    """`k8s-v1.36.3-etcd-v3.6.16-kwok-v0.8.0-helm-v3.22.0-<hash>`: readable pins, exact inputs."""
    digest = hashlib.sha256()
    for module in MODULES:
        for name in ("go.mod", "go.sum"):
            digest.update((module.path / name).read_bytes())
    digest.update(go_version(go).encode())
    digest.update(repr((BUILD_FLAGS, sorted(BUILD_ENV.items()), KWOK_STAGE_FILES)).encode())
    short = {"kube": "k8s"}
    pins = "-".join(f"{short.get(m.folder, m.folder)}-{m.version()}" for m in MODULES)
    return f"{pins}-{digest.hexdigest()[:10]}"


def cache_root() -> Path:
    base = os.environ.get("SWIFTDIFFUSION_CACHE") or Path.home() / ".cache" / "swiftdiffusion"
    return Path(base) / "testbed"


def binaries_present(bin_dir: Path) -> bool:
    names = [name for module in MODULES for name in module.binaries] + [KWOK_STAGES]
    return all((bin_dir / name).is_file() for name in names)


def build_module(go: str, module: GoModule, out: Path) -> None:
    env = {**os.environ, **BUILD_ENV}
    packages = list(module.binaries.values())
    # One `go build` per module so the three Kubernetes binaries share compilation.
    target = f"{out}/" if len(packages) > 1 else str(out / next(iter(module.binaries)))
    subprocess.run([go, "build", *BUILD_FLAGS, "-o", target, *packages], cwd=module.path, env=env, check=True)


def write_kwok_stages(go: str, out: Path) -> None:
    kwok = next(m for m in MODULES if m.folder == "kwok")
    source = subprocess.run(
        [go, "list", "-m", "-f", "{{.Dir}}", kwok.pinned],
        cwd=kwok.path, env={**os.environ, **BUILD_ENV}, check=True, capture_output=True, text=True,
    ).stdout.strip()
    stages = [(Path(source) / name).read_text() for name in KWOK_STAGE_FILES]
    (out / KWOK_STAGES).write_text("\n---\n".join(stages))


def ensure_built(log: TextIO = sys.stderr) -> Path:
    """Returns the cached bin directory, building it first when this key has none.

    A lock file serialises concurrent cold builds of one key (parallel `make test`s).
    """
    go = go_command()
    bin_dir = cache_root() / cache_key(go) / "bin"
    if binaries_present(bin_dir):
        return bin_dir
    bin_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(bin_dir.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not binaries_present(bin_dir):
            _build_into(go, bin_dir, log)
    return bin_dir


def _build_into(go: str, bin_dir: Path, log: TextIO) -> None:
    staging = bin_dir.with_name("bin.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    started = time.monotonic()
    print(f"testbed: cold build into {bin_dir.parent} (minutes: see docs/testbed.md)", file=log, flush=True)
    for module in MODULES:
        print(f"testbed: building {module.pinned} {module.version()}", file=log, flush=True)
        build_module(go, module, staging)
    write_kwok_stages(go, staging)
    shutil.rmtree(bin_dir, ignore_errors=True)
    staging.rename(bin_dir)
    print(f"testbed: built in {time.monotonic() - started:.0f} s", file=log, flush=True)
