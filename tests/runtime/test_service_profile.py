"""`swiftdiffusion profile`: options it cannot measure with are refused before anything starts,
and the profile derived from the probes' timings predicts them back. (The measurement itself
is checked against the fleet in tests/fleet/test_calibration.py.)"""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import grpc
import pytest
import yaml
from grpc_health.v1 import health, health_pb2_grpc

from swiftdiffusion.planner import service
from swiftdiffusion.planner.profile import Profile
from swiftdiffusion.runtime.cli import main
from swiftdiffusion.runtime.dev import service_profile


@pytest.mark.parametrize("option", [["--repeats", "0"], ["--steps", "0"], ["--size", "4"], ["--scrape-seconds", "-1"]])
def test_bad_options_exit_2_naming_them_and_write_nothing(option: list[str], tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "profile.json"
    assert main(["profile", "--models", str(tmp_path / "models"), "--out", str(out), *option]) == 2
    assert option[0] in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "models").exists()


ENCODER, DECODER, CONTROLNET, WIRE, EXCHANGE, STEPS = 0.05, 0.05, 0.045, 0.012, 0.02, 8
DECODE = 0.06  # of the 0.1 s outside the loop: after it, outside the worker


def measured_step(controlnets: int) -> tuple[float, float]:
    """(step, wait) of a replica whose exchange work runs beside its encoder: the loop waits
    for residuals once the encoder is done, and the step takes the longer path."""
    if not controlnets:
        return ENCODER + DECODER, 0.0
    round_trip = controlnets * CONTROLNET + WIRE
    return max(ENCODER + EXCHANGE, round_trip) + DECODER, max(0.0, round_trip - ENCODER)


def probe(controlnets: int, extra: float = 0.0, loads: int = 0, load: float = 0.3) -> service_profile.Probe:
    """A request's sample; its `loads` misses, `load` seconds each, lengthen its session's open."""
    step, wait = measured_step(controlnets)
    timings = {"total": STEPS * step + 0.1 + extra + loads * load, "queue": 0.0, "denoise": STEPS * step + extra,
               "residual_wait": STEPS * wait, "controlnet_open": 0.02 * controlnets + loads * load,
               "vae_decode": DECODE - 0.004, "png": 0.004}
    sample = service_profile.Sample(timings, round_trip=controlnets * CONTROLNET + WIRE if controlnets else 0.0,
                                    controlnet_compute=controlnets * CONTROLNET, loads=loads, load_seconds=loads * load)
    return service_profile.Probe("", (0, 0), lambda seed: None, [sample])


def backlog(queued: float, decode_slowdown: float, requests: int = 9) -> service_profile.Backlog:
    """A queue of `requests` (the backlog's mix, in turn): the first has the worker at once, each
    later one holds it `queued` times as long as alone, less the decode before it frees it."""
    alone = [STEPS * measured_step(n)[0] + 0.1 for n in service_profile.BACKLOG_COUNTS]
    served = sum(alone) / len(alone)
    return service_profile.Backlog(served + (requests - 1) * (served - DECODE) * queued, requests,
                                   [DECODE * decode_slowdown] * requests)


def test_the_derived_profile_predicts_what_it_measured_alone_and_behind_a_queue() -> None:
    probes = {f"{n} ControlNets": probe(n) for n in service_profile.CONTROL_COUNTS}
    probes |= {"1 LoRAs": probe(0, 0.03), "2 LoRAs": probe(0, 0.06)}
    derived = Profile.model_validate(service_profile.derive(
        probes, STEPS, 64, pod_start=10.0, cn_metrics={}, base_metrics={}, backlogs=[backlog(1.08, 2.5)]))

    assert derived.queued_slowdown == pytest.approx(1.08)
    assert derived.decode_seconds == pytest.approx(DECODE)
    assert derived.queued_decode_slowdown == pytest.approx(2.5)
    assert derived.residual_exchange_seconds == pytest.approx(EXCHANGE)
    assert derived.residual_transfer_seconds == pytest.approx(WIRE)
    for n in service_profile.CONTROL_COUNTS:
        assert service.decoupled_step(derived, service.Work(STEPS, 64 * 64, n, ()), 1.0) == pytest.approx(
            measured_step(n)[0]), n
    # With one ControlNet the step is the encoder's path: the exchange is what makes it so.
    without = derived.model_copy(update={"residual_exchange_seconds": 0.0})
    assert service.decoupled_step(without, service.Work(STEPS, 64 * 64, 1, ()), 1.0) < 0.95 * measured_step(1)[0]


def test_the_rounds_misses_are_the_load_time_and_are_taken_out_of_the_open_and_the_queue() -> None:
    """The profile's ControlNet cache holds one ControlNet, so its rounds miss: what the misses
    took is the load time, and nothing else the profile derives moves with them."""
    probes = {f"{n} ControlNets": probe(n, loads=min(n, 2), load=0.1 * n) for n in service_profile.CONTROL_COUNTS}
    probes |= {"1 LoRAs": probe(0, 0.03), "2 LoRAs": probe(0, 0.06)}
    derived = Profile.model_validate(service_profile.derive(
        probes, STEPS, 64, pod_start=10.0, cn_metrics={}, base_metrics={}, backlogs=[backlog(1.08, 2.5)]))

    assert derived.controlnet_load_seconds == pytest.approx((0.1 + 2 * 0.2 + 2 * 0.3) / 5)  # over all 5 loads
    assert derived.controlnet_open_seconds == pytest.approx(0.02)
    assert derived.queued_slowdown == pytest.approx(1.08)


class CountingHealth(health.HealthServicer):
    def __init__(self) -> None:
        super().__init__()
        self.checks = 0

    def Check(self, request, context):  # noqa: N802 (gRPC's name)
        self.checks += 1
        return super().Check(request, context)


@pytest.fixture
def pod() -> Iterator[tuple[int, str, list[str], CountingHealth]]:
    """A /metrics endpoint and a gRPC health service that count what they answer."""
    paths: list[str] = []

    class Metrics(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            paths.append(self.path)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"up 1\n")

        def log_message(self, *args) -> None:
            pass

    http = ThreadingHTTPServer(("127.0.0.1", 0), Metrics)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    server, servicer = grpc.server(futures.ThreadPoolExecutor(2)), CountingHealth()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield http.server_address[1], f"127.0.0.1:{port}", paths, servicer
    finally:
        server.stop(None)
        http.shutdown()


def test_the_services_answer_a_pods_scrapes_and_probes_while_measured_and_not_after(pod) -> None:
    metrics_port, target, scraped, probed = pod
    traffic = service_profile.PodTraffic(scrape_seconds=0.2, probe_seconds=(0.3, 0.5))
    started = time.monotonic()
    with traffic.sent([metrics_port], [target]):
        time.sleep(1.1)
    elapsed = time.monotonic() - started
    # Each call first one period in, then every period: never more often than that.
    assert 2 <= len(scraped) <= elapsed // 0.2 and set(scraped) == {"/metrics"}
    assert 2 <= probed.checks <= elapsed // 0.3 + elapsed // 0.5
    counts = len(scraped), probed.checks
    time.sleep(0.6)
    assert (len(scraped), probed.checks) == counts, "traffic went on after the block"
    assert "a /metrics scrape every 0.2 s and gRPC health probes every 0.3 and 0.5 s" in traffic.describe()


def test_the_default_scrape_is_the_charts() -> None:
    values = yaml.safe_load((Path(__file__).resolve().parents[2] / "charts/swiftdiffusion/values.yaml").read_text())
    assert values["serviceMonitor"]["interval"] == f"{service_profile.CHART_SCRAPE_SECONDS:g}s"
