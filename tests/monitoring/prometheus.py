"""A real Prometheus server as a child process, for tests that run queries against scraped data.

The binary is the one `scripts/prometheus install` unpacks (Debian's 2.42, as promtool); without
it the tests error and say what to run, since a skipped monitoring test passes silently.
"""
from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from swiftdiffusion.runtime.dev.ports import free_port

REPO = Path(__file__).resolve().parents[2]
SCRAPE_INTERVAL_SECONDS = 1


def binary(name: str = "prometheus") -> Path:
    """prometheus or promtool as `scripts/prometheus install` unpacked them; an error saying how
    to get them otherwise (never a skip)."""
    found = subprocess.run([str(REPO / "scripts" / "prometheus"), "path", name],
                           capture_output=True, text=True, check=False)
    if found.returncode:
        raise RuntimeError(found.stderr.strip())
    return Path(found.stdout.strip())


@dataclass(frozen=True)
class Target:
    """One scraped endpoint and the labels service discovery would attach to its series."""

    job: str
    address: str
    labels: Mapping[str, str]


def config(targets: Sequence[Target]) -> dict[str, Any]:
    """prometheus.yml: every target scraped each second, one job per `Target.job`."""
    jobs = dict.fromkeys(t.job for t in targets)
    interval = f"{SCRAPE_INTERVAL_SECONDS}s"
    return {"global": {"scrape_interval": interval, "scrape_timeout": interval, "evaluation_interval": interval},
            "scrape_configs": [{"job_name": job, "static_configs": [
                {"targets": [t.address], "labels": dict(t.labels)} for t in targets if t.job == job]}
                for job in jobs]}


class QueryError(Exception):
    """Prometheus refused a query: `errorType` and `error` as its API returned them."""


@dataclass
class Prometheus:
    """The server's HTTP API, as Grafana's Prometheus data source calls it."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def _get(self, path: str, **params: str | list[str]) -> Any:
        """`data` of an API answer; a 4xx answer (a query that does not parse) raises QueryError."""
        query = urllib.parse.urlencode(params, doseq=True)
        try:
            with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=30) as response:
                body = json.load(response)
        except urllib.error.HTTPError as error:
            body = json.load(error)
        if body.get("status") != "success":
            raise QueryError(f"{body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str, at: float) -> dict[str, Any]:
        """An instant query at unix time `at` (what a Grafana panel's last point reads)."""
        return self._get("/api/v1/query", query=expr, time=f"{at:.3f}")

    def label_values(self, label: str, match: str | None, start: float, end: float) -> list[str]:
        """What Grafana's `label_values(match, label)` lists: a label's values over a time range."""
        params: dict[str, str | list[str]] = {"start": f"{start:.3f}", "end": f"{end:.3f}"}
        if match:
            params["match[]"] = [match]
        return self._get(f"/api/v1/label/{urllib.parse.quote(label)}/values", **params)

    def targets(self) -> list[dict[str, Any]]:
        return self._get("/api/v1/targets", state="active")["activeTargets"]

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"prometheus exited ({self.process.returncode}):\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"prometheus not ready after {timeout:.0f} s:\n{self.log_tail()}")
            time.sleep(0.1)

    def wait_scraped_twice_since(self, since: float, timeout: float = 30.0) -> None:
        """Waits until every target answered two scrapes that started after unix time `since`:
        a rate() then sees what happened before `since` in its last two samples."""
        deadline = time.monotonic() + timeout
        while True:
            active = self.targets()
            late = [t for t in active if t["health"] != "up"
                    or datetime.fromisoformat(t["lastScrape"]).timestamp() <= since + SCRAPE_INTERVAL_SECONDS]
            if active and not late:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"targets not scraped twice since {since:.1f}: "
                                   f"{[(t['scrapeUrl'], t['health'], t['lastError']) for t in late]}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:]) if self.log.exists() else ""


@contextmanager
def running_prometheus(targets: Sequence[Target], folder: Path) -> Iterator[Prometheus]:
    """Prometheus on a free loopback port with its data in `folder`, stopped on exit.

    It may start before its targets listen: a target that refuses a scrape is just down until it does.
    """
    folder.mkdir(parents=True, exist_ok=True)
    config_file = folder / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config(targets), sort_keys=False))
    address, log = f"127.0.0.1:{free_port()}", folder / "prometheus.log"
    command = [str(binary()), f"--config.file={config_file}", f"--storage.tsdb.path={folder / 'data'}",
               f"--web.listen-address={address}", "--log.level=warn"]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    server = Prometheus(f"http://{address}", process, log)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()
