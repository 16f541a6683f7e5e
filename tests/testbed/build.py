"""Builds the test bed's binaries from the pinned Go modules beside this file.

Each module is cached on its own, under a key made of its folder, its pinned version and
a hash of its files (go.mod, go.sum, any main.go), the Go version and the build flags:
adding or moving one module rebuilds only that one, and a pin change never reuses stale
binaries. A directory keyed by the set of module keys links every binary, so callers
find each one as `bin / name`.
"""
from __future__ import annotations

import fcntl
import functools
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
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
KEDA = "github.com/kedacore/keda/v2"
# KEDA's CRDs, and the RBAC of its operator and metrics adapter, as its manifests install them.
KEDA_CRD_FILES = tuple(f"config/crd/bases/{name}.yaml" for name in (
    "keda.sh_scaledobjects", "keda.sh_scaledjobs", "keda.sh_triggerauthentications",
    "keda.sh_clustertriggerauthentications", "eventing.keda.sh_cloudeventsources",
    "eventing.keda.sh_clustercloudeventsources"))
KEDA_RBAC_FILES = ("config/rbac/role.yaml", "config/rbac/role_binding.yaml",
                   "config/metrics-server/role.yaml", "config/metrics-server/role_binding.yaml")
KEDA_CRDS = "keda-crds.yaml"
KEDA_RBAC = "keda-rbac.yaml"


@dataclass(frozen=True)
class GoModule:
    """One wrapper module under tests/testbed/: which pin names it and what it builds."""

    folder: str
    pinned: str
    binaries: dict[str, str]  # binary name -> Go package
    # Output file -> files of the pinned module's source, joined as a multi-document YAML.
    joined_sources: dict[str, tuple[str, ...]] = field(default_factory=dict)
    tags: tuple[str, ...] = ()  # Go build tags

    @property
    def path(self) -> Path:
        return HERE / self.folder

    @property
    def outputs(self) -> list[str]:
        return [*self.binaries, *self.joined_sources]

    def version(self) -> str:
        text = (self.path / "go.mod").read_text()
        match = re.search(rf"^\s*(?:require\s+)?{re.escape(self.pinned)}\s+(v\S+)", text, re.M)
        if match is None:
            raise RuntimeError(f"{self.path}/go.mod does not require {self.pinned}")
        return match.group(1)

    def cache_key(self, go_version: str) -> str:
        """`kwok-v0.8.0-<hash>`: the readable pin, then a hash of every input of the build."""
        digest = hashlib.sha256()
        for path in sorted(p for p in self.path.iterdir() if p.is_file()):
            digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
        inputs = (go_version, BUILD_FLAGS, sorted(BUILD_ENV.items()), self.binaries, self.joined_sources)
        if self.tags:  # only then, so adding the field kept every other module's key
            inputs += (self.tags,)
        digest.update(repr(inputs).encode())
        return f"{self.folder}-{self.version()}-{digest.hexdigest()[:10]}"


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
    GoModule("kwok", "sigs.k8s.io/kwok", {"kwok": "sigs.k8s.io/kwok/cmd/kwok"}, {KWOK_STAGES: KWOK_STAGE_FILES}),
    GoModule("helm", "helm.sh/helm/v3", {"helm": "helm.sh/helm/v3/cmd/helm"}),
    GoModule("coredns", "github.com/coredns/coredns", {"coredns": "."}),
    GoModule("kstatus", "sigs.k8s.io/cli-utils", {"kstatus": "."}),
    GoModule("keda", KEDA, {"keda-operator": f"{KEDA}/cmd/operator", "keda-adapter": f"{KEDA}/cmd/adapter"},
             {KEDA_CRDS: KEDA_CRD_FILES, KEDA_RBAC: KEDA_RBAC_FILES}),
    GoModule("prometheus", "github.com/prometheus/prometheus",
             {"prometheus": "github.com/prometheus/prometheus/cmd/prometheus"},
             tags=("remove_all_sd", "enable_kubernetes_sd")),  # the only discovery the fleet uses
)


def go_command() -> str:
    found = shutil.which("go") or "/usr/local/go/bin/go"
    if not os.access(found, os.X_OK):
        raise RuntimeError("the test bed needs Go (https://go.dev/doc/install) on PATH")
    return found


def go_version(go: str) -> str:
    return subprocess.run([go, "env", "GOVERSION"], check=True, capture_output=True, text=True).stdout.strip()


def cache_root() -> Path:
    base = os.environ.get("SWIFTDIFFUSION_CACHE") or Path.home() / ".cache" / "swiftdiffusion"
    return Path(base) / "testbed"


def build_module(go: str, module: GoModule, out: Path) -> None:
    env = {**os.environ, **BUILD_ENV}
    packages = list(module.binaries.values())
    # One `go build` per module so the three Kubernetes binaries share compilation.
    target = f"{out}/" if len(packages) > 1 else str(out / next(iter(module.binaries)))
    tags = [f"-tags={','.join(module.tags)}"] if module.tags else []
    subprocess.run([go, "build", *BUILD_FLAGS, *tags, "-o", target, *packages], cwd=module.path, env=env, check=True)
    if len(packages) > 1:  # `-o dir/` names each binary after its package's folder
        for name, package in module.binaries.items():
            if (built := out / package.rsplit("/", 1)[-1]).name != name:
                built.rename(out / name)
    if module.joined_sources:
        source = subprocess.run(
            [go, "list", "-m", "-f", "{{.Dir}}", module.pinned],
            cwd=module.path, env=env, check=True, capture_output=True, text=True,
        ).stdout.strip()
        for name, files in module.joined_sources.items():
            (out / name).write_text("\n---\n".join((Path(source) / file).read_text() for file in files))


def ensure_built(log: TextIO = sys.stderr) -> Path:
    """Returns a bin directory holding every module's outputs, building the modules it lacks."""
    go = go_command()
    version = go_version(go)
    built = [(module, cache_root() / "modules" / module.cache_key(version)) for module in MODULES]
    for module, out in built:
        _cached(out, module.outputs, functools.partial(_build_logged, go, module, log))
    links = {name: out / name for module, out in built for name in module.outputs}
    digest = hashlib.sha256(" ".join(out.name for _, out in built).encode()).hexdigest()[:10]
    bin_dir = cache_root() / "bin" / digest
    _cached(bin_dir, links, functools.partial(_link, links))
    return bin_dir


def _holds(directory: Path, names: Iterable[str]) -> bool:
    return all((directory / name).is_file() for name in names)


def _cached(target: Path, names: Iterable[str], make: Callable[[Path], None]) -> None:
    """Makes `target` with `make(staging)` unless it already holds `names`.

    A lock file beside it serialises concurrent cold builds of one key (parallel `make
    test`s), and the final rename makes the directory appear complete or not at all.
    """
    names = list(names)
    if _holds(target, names):
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.with_name(f".{target.name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _holds(target, names):
            return
        staging = target.with_name(f"{target.name}.partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        make(staging)
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)


def _build_logged(go: str, module: GoModule, log: TextIO, staging: Path) -> None:
    started = time.monotonic()
    print(f"testbed: cold build of {module.pinned} {module.version()} (minutes: see docs/testbed.md)",
          file=log, flush=True)
    build_module(go, module, staging)
    print(f"testbed: built {module.folder} in {time.monotonic() - started:.0f} s", file=log, flush=True)


def _link(links: dict[str, Path], staging: Path) -> None:
    for name, target in links.items():
        (staging / name).symlink_to(target)
