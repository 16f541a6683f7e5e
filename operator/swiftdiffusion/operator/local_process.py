"""The operator as a child process of this machine, against any cluster a kubeconfig names.

The cluster tests and the operator benchmark run the real entry point this way (one
process per namespace), read its liveness and Prometheus endpoints, and stop it with the
signal a kubelet would send.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from swiftdiffusion.runtime.dev.ports import free_port


@dataclass
class LocalOperator:
    """`python -m swiftdiffusion.operator.main --namespace <ns>` with its log in `log_path`."""

    namespace: str
    kubeconfig: str
    log_path: Path
    metrics_port: int = field(default_factory=free_port)
    liveness_port: int = field(default_factory=free_port)
    args: tuple[str, ...] = ()  # further command-line options, e.g. --no-network-policies
    process: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> LocalOperator:
        """Start it and wait until its liveness endpoint answers."""
        command = [sys.executable, "-m", "swiftdiffusion.operator.main", "--namespace", self.namespace,
                   "--liveness", f"http://127.0.0.1:{self.liveness_port}/healthz",
                   "--metrics-port", str(self.metrics_port), *self.args]
        env = {**os.environ, "KUBECONFIG": self.kubeconfig}
        env.pop("KUBERNETES_SERVICE_HOST", None)
        with self.log_path.open("a") as log:
            self.process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not self._alive():
            if time.monotonic() > deadline:
                raise TimeoutError(f"operator not live after {timeout:.0f} s:\n{self.log_tail()}")
            time.sleep(0.2)
        return self

    def _alive(self) -> bool:
        if self.process is None or self.process.poll() is not None:
            raise RuntimeError(f"operator exited:\n{self.log_tail()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.liveness_port}/healthz", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def metrics(self) -> dict[str, float]:
        """Samples as `name{label=value,...}` -> value."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            text = response.read().decode()
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                out[f"{sample.name}{{{labels}}}"] = sample.value
        return out

    def total(self, name: str) -> float:
        """One metric summed over its labels."""
        return sum(v for k, v in self.metrics().items() if k.startswith(name + "{"))

    def peak_rss_mib(self) -> float:
        assert self.process is not None
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        match = re.search(r"VmHWM:\s+(\d+) kB", status)
        return int(match.group(1)) / 1024 if match else float("nan")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])
