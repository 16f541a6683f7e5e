"""Both services as local subprocesses: the embedded default behind `serve` and the demo.

Configs are written in the operator's format (docs/architecture.md), so the local stack
runs exactly the commands the pods run.
"""
from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from swiftdiffusion.runtime.config import (
    SHUTDOWN_GRACE_SECONDS,
    BaseSection,
    ControlNetEntry,
    ControlNetSection,
    Defaults,
    LoraEntry,
    RuntimeConfig,
    dump_config,
)
from swiftdiffusion.runtime.dev.ports import free_port
from swiftdiffusion.runtime.serving.grpc_common import check_health


def threads_per_service() -> int:
    """Half the CPUs each: two busy processes with too many threads thrash on a small machine."""
    return max(1, len(os.sched_getaffinity(0)) // 2)


@dataclass(frozen=True)
class StackOptions:
    model_set: Path
    base_port: int = 50051
    controlnet_port: int = 50052
    base_metrics_port: int = 9400
    controlnet_metrics_port: int = 9401
    mode: str = "synchronous"
    threads: int | None = field(default_factory=threads_per_service)
    base_cpus: Sequence[int] | None = None
    controlnet_cpus: Sequence[int] | None = None
    defaults: Defaults = Defaults(steps=20, guidance_scale=5.0, width=256, height=256)
    loras: Sequence[LoraEntry] = ()
    wire_dtype: str = "float32"
    shutdown_grace_seconds: float = SHUTDOWN_GRACE_SECONDS
    controlnet_cache_bytes: int = 8 << 30

    @classmethod
    def on_free_ports(cls, model_set: Path, **options) -> StackOptions:
        """Options whose four ports are free now (tests, the demo and benchmarks run side by side)."""
        ports = ("base_port", "controlnet_port", "base_metrics_port", "controlnet_metrics_port")
        return cls(model_set, **{name: free_port() for name in ports}, **options)


def stack_configs(options: StackOptions) -> tuple[RuntimeConfig, RuntimeConfig]:
    """(base, controlnet) configs for a model set built by model_factory."""
    options = dataclasses.replace(options, model_set=options.model_set.resolve())
    names = sorted(p.name for p in (options.model_set / "controlnets").iterdir())
    controlnets = [ControlNetEntry(name=n, model=str(options.model_set / "controlnets" / n)) for n in names]
    common = dict(
        model_store=str(options.model_set), controlnets=controlnets, device="cpu", torch_threads=options.threads,
        bind_address="127.0.0.1", shutdown_grace_seconds=options.shutdown_grace_seconds,
    )
    base = RuntimeConfig(
        role="base",
        grpc_port=options.base_port,
        metrics_port=options.base_metrics_port,
        cpu_affinity=list(options.base_cpus) if options.base_cpus else None,
        base=BaseSection(
            model=str(options.model_set / "base"),
            dtype="float32",
            defaults=options.defaults,
            controlnet_service=f"127.0.0.1:{options.controlnet_port}",
            controlnet_mode=options.mode,
            loras=list(options.loras),
            residual_wire_dtype=options.wire_dtype,
        ),
        **common,
    )
    controlnet = RuntimeConfig(
        role="controlnet",
        grpc_port=options.controlnet_port,
        metrics_port=options.controlnet_metrics_port,
        cpu_affinity=list(options.controlnet_cpus) if options.controlnet_cpus else None,
        controlnet=ControlNetSection(cache_bytes=options.controlnet_cache_bytes, dtype="float32"),
        **common,
    )
    return base, controlnet


@dataclass
class ServiceProcess:
    """One `swiftdiffusion serve-*` subprocess with its log file."""

    role: str
    target: str
    process: subprocess.Popen
    log: Path

    def wait_healthy(self, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.role} service exited ({self.process.returncode}); log:\n{self.log.read_text()[-4000:]}")
            if check_health(self.target, timeout=1.0):
                return
            time.sleep(0.2)
        raise TimeoutError(f"{self.role} service not healthy after {timeout:.0f}s; log:\n{self.log.read_text()[-4000:]}")

    def stop(self, timeout: float = 10.0) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


# Rewrites a service's command before it starts (role, argv -> argv): to run it under a
# launcher, e.g. in a cgroup with a CPU limit as its pod has.
Launcher = Callable[[str, list[str]], list[str]]


def start_service(role: str, config: RuntimeConfig, folder: Path, env: dict[str, str] | None = None,
                  launcher: Launcher | None = None) -> ServiceProcess:
    folder.mkdir(parents=True, exist_ok=True)
    config_path = folder / f"{role}.yaml"
    config_path.write_text(dump_config(config))
    log = folder / f"{role}.log"
    command = [sys.executable, "-m", "swiftdiffusion.runtime.cli", f"serve-{role}", "--config", str(config_path)]
    if launcher is not None:
        command = launcher(role, command)
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    return ServiceProcess(role, f"127.0.0.1:{config.grpc_port}", process, log)


@dataclass(frozen=True)
class LocalStack:
    base: ServiceProcess
    controlnet: ServiceProcess
    options: StackOptions


@contextmanager
def local_stack(options: StackOptions, folder: Path, timeout: float = 180.0,
                launcher: Launcher | None = None) -> Iterator[LocalStack]:
    """Start the ControlNet and base services, wait until both are healthy, stop both after."""
    base_config, controlnet_config = stack_configs(options)
    with ExitStack() as stack:
        controlnet = start_service("controlnet", controlnet_config, folder, launcher=launcher)
        stack.callback(controlnet.stop)
        base = start_service("base", base_config, folder, launcher=launcher)
        stack.callback(base.stop)
        controlnet.wait_healthy(timeout)
        base.wait_healthy(timeout)
        yield LocalStack(base, controlnet, options)
