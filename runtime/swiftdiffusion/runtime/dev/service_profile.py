"""`swiftdiffusion profile`: the planner's service-time profile, measured on the real runtime.

The base and ControlNet services run as the pods run them (their own processes, one
intra-op thread each) on a model set; requests with 0-3 ControlNets and with LoRAs are
sent one at a time, and every field of `planner.profile.Profile` is derived from the
replies' phase timings and the services' own /metrics, so nothing in the profile is typed
in. What one machine cannot measure (latent parallelism needs a second device) is named
in `source`.

Per step, the base loop sends the latent, runs the UNet encoder, waits for the residuals,
runs the decoder; so the encoder is the residual round trip less the wait, and the wire's
share is the round trip less the ControlNet service's own compute. The base replica's own
work on the exchange (the latent out, the residuals in) runs on its device beside the
encoder, so it shows where the ControlNets are faster than the encoder: in a step with one.

The ControlNet service's cache holds one ControlNet, so every round misses: a load is a
short burst of work that a CPU quota stretches by where it falls in the quota's period, and
the rounds sample it many times over (the warm-up's first loads, one of each, are not kept).
What a miss costs is its own field, so each request's loads are taken out of its other times.

A replica with a queue serves each request more slowly than one at a time: the base server
frees its worker before it decodes, so the next request starts beside that decode, and the
waiting requests' threads run too. Each round also keeps a queue of `QUEUE_DEPTH` in front
of the base service (requests with 0 and 1 ControlNets): what a queued request holds the worker
for, against the same requests alone right before it, is `queued_slowdown`, and what its
replies' decodes took, against a decode alone, is `queued_decode_slowdown`.

A pod also answers Prometheus's scrapes of its /metrics and the kubelet's health probes
beside its requests, so the services answer them too while they are measured (`PodTraffic`):
on a 0.2-core service, a scrape every 2 s and the rendered probes took 2-4% of its time.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from swiftdiffusion.operator.render import LIVENESS_PROBE_SECONDS, READINESS_PROBE_SECONDS
from swiftdiffusion.runtime import metric_names as names
from swiftdiffusion.runtime.client import GenerateReply, generate, generate_request
from swiftdiffusion.runtime.config import Defaults, LoraEntry
from swiftdiffusion.runtime.dev.local_stack import Launcher, StackOptions, local_stack
from swiftdiffusion.runtime.serving.grpc_common import check_health

CONTROL_COUNTS = (0, 1, 2, 3)
QUEUE_DEPTH = 3  # clients keeping the base service's queue full
# The ControlNets of the backlog's requests, QUEUE_DEPTH of each: one ControlNet at most, so that
# they do not miss in turn (a load in the ControlNet service would hide the base's decode).
BACKLOG_COUNTS = (0, 1)
LORAS = ("profile-a", "profile-b")
CHART_SCRAPE_SECONDS = 30.0  # the chart's ServiceMonitor interval


@dataclass(frozen=True)
class PodTraffic:
    """What a serving pod answers beside its requests: Prometheus scraping its /metrics every
    `scrape_seconds` (None: not scraped) and the kubelet's gRPC health probes, one every
    period in `probe_seconds` (the operator's readiness and liveness probes)."""

    scrape_seconds: float | None = CHART_SCRAPE_SECONDS
    probe_seconds: tuple[float, ...] = (READINESS_PROBE_SECONDS, LIVENESS_PROBE_SECONDS)

    def describe(self) -> str:
        scrape = f"a /metrics scrape every {self.scrape_seconds:g} s" if self.scrape_seconds else "no scrape"
        return f"{scrape} and gRPC health probes every {' and '.join(f'{p:g}' for p in self.probe_seconds)} s"

    @contextlib.contextmanager
    def sent(self, metrics_ports: Sequence[int], targets: Sequence[str]) -> Iterator[None]:
        """Sends it to the services until the block ends, each call first one period in."""
        calls: list[tuple[float, Callable[[], object]]] = []
        if self.scrape_seconds:
            calls += [(self.scrape_seconds, lambda port=port: _fetch(port)) for port in metrics_ports]
        calls += [(period, lambda target=target: check_health(target))
                  for period in self.probe_seconds for target in targets]
        stop = threading.Event()

        def send() -> None:
            due = [time.monotonic() + period for period, _ in calls]
            while calls:
                first = min(range(len(calls)), key=due.__getitem__)
                if stop.wait(max(0.0, due[first] - time.monotonic())):
                    return
                calls[first][1]()
                due[first] += calls[first][0]

        sender = threading.Thread(target=send, name="pod-traffic", daemon=True)
        sender.start()
        try:
            yield
        finally:
            stop.set()
            sender.join()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", type=Path, default=Path(".models"), help="model set folder (built if missing)")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels (the profile's reference)")
    parser.add_argument("--steps", type=int, default=8)
    # Five: one round's queue against its requests alone swings by +-13% on a VM whose speed
    # drifts (docs/calibration.md), and `queued_slowdown` moves latency most.
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds (the median is kept)")
    parser.add_argument("--scrape-seconds", type=float, default=CHART_SCRAPE_SECONDS,
                        help="Prometheus's scrape interval for the pods, which the services answer while measured "
                             "(0: none; the chart's ServiceMonitor: 30)")
    parser.add_argument("--out", type=Path, default=Path("out/profile.json"))


def run(args: argparse.Namespace) -> int:
    from swiftdiffusion.runtime.dev.model_factory import build_model_set

    if args.repeats < 1 or args.steps < 1 or args.size < 8 or args.scrape_seconds < 0:
        print("swiftdiffusion profile: --repeats and --steps must be >= 1, --size >= 8 and --scrape-seconds >= 0",
              file=sys.stderr)
        return 2
    models = build_model_set(args.models, "tiny") if not (args.models / "base").is_dir() else args.models
    traffic = PodTraffic(scrape_seconds=args.scrape_seconds or None)
    profile = measure(models, size=args.size, steps=args.steps, repeats=args.repeats, log=print,
                      traffic=traffic).profile()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    partial = args.out.with_suffix(".partial")
    partial.write_text(json.dumps(profile, indent=2) + "\n")
    partial.replace(args.out)
    for key, value in profile.items():
        if key != "source":
            print(f"  {key:28s} {value}")
    print(f"profile -> {args.out}")
    return 0


def _fetch(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return response.read().decode()


def scrape(port: int) -> dict[str, float]:
    """Every sample of a service's /metrics, summed over labels other than the sample name
    (`kind` is kept: base and ControlNet model loads are different things)."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(_fetch(port)):
        for sample in family.samples:
            key = sample.name + (f"{{kind={sample.labels['kind']}}}" if "kind" in sample.labels else "")
            out[key] = out.get(key, 0.0) + sample.value
    return out


def _observed(after: dict[str, float], before: dict[str, float], histogram: str,
              kind: str = "") -> tuple[float, float]:
    """(observations, their sum) of a histogram between two scrapes."""
    labels = f"{{kind={kind}}}" if kind else ""
    count, total = (f"{histogram}_{part}{labels}" for part in ("count", "sum"))
    return after.get(count, 0.0) - before.get(count, 0.0), after.get(total, 0.0) - before.get(total, 0.0)


def _mean(after: dict[str, float], before: dict[str, float], histogram: str, kind: str = "") -> float:
    """The mean observation of a histogram between two scrapes (0 when nothing was observed)."""
    count, total = _observed(after, before, histogram, kind)
    return total / count if count else 0.0


def _loads(after: dict[str, float], before: dict[str, float]) -> tuple[float, float]:
    """(ControlNets loaded, their seconds) between two scrapes of the ControlNet service."""
    return _observed(after, before, names.MODEL_LOAD_SECONDS, kind="controlnet")


def _decode(timings: dict[str, float]) -> float:
    """After the loop, outside the worker: the VAE decode and the image's encoding."""
    return timings.get("vae_decode", 0.0) + timings.get("png", 0.0)


@dataclass
class Backlog:
    """One round's queue: `requests` sent by `QUEUE_DEPTH` clients at once."""

    seconds: float  # first sent to last answered, less the ControlNet loads of their misses
    requests: int
    decodes: list[float]  # each reply's decode


@dataclass
class Sample:
    """One request: its phase timings and what each service observed while it ran."""

    timings: dict[str, float]
    round_trip: float  # per step, latent sent to residuals received (base side)
    controlnet_compute: float  # per step, the ControlNet service's own compute
    loads: float = 0.0  # ControlNets the service loaded for it (its cache misses)
    load_seconds: float = 0.0  # and their seconds
    span: tuple[float, float] = (0.0, 0.0)  # wall clock when it was sent and answered


@dataclass
class Probe:
    """Sends one kind of request and keeps its samples."""

    target: str
    ports: tuple[int, int]  # (base, ControlNet) metrics
    request: Callable[[int], object]
    samples: list[Sample] = field(default_factory=list)

    def once(self, seed: int) -> Sample:
        before = [scrape(p) for p in self.ports]
        sent = time.time()
        reply: GenerateReply = generate(self.target, self.request(seed), timeout=600)
        answered = time.time()
        base, cn = [scrape(p) for p in self.ports]
        sample = Sample(reply.timings, _mean(base, before[0], names.RESIDUAL_TRANSFER_SECONDS),
                        _mean(cn, before[1], names.STEP_SECONDS), *_loads(cn, before[1]), span=(sent, answered))
        self.samples.append(sample)
        return sample

    def median(self, value: Callable[[Sample], float]) -> float:
        return statistics.median(value(s) for s in self.samples)


def _control_image(size: int, variant: int) -> bytes:
    import io

    from PIL import Image, ImageDraw

    image = Image.new("RGB", (size, size))
    ImageDraw.Draw(image).rectangle([size // (4 + variant), size // 4, size - size // 5, size - size // 3],
                                    outline="white", width=2)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


@dataclass
class Measurement:
    """What the rounds measured. The samples keep their moments, so that a caller can set them
    against another clock of the machine's speed (the calibration's canary: docs/calibration.md)."""

    probes: dict[str, Probe]
    backlogs: list[Backlog]
    steps: int
    size: int
    pod_start: float
    cn_metrics: dict[str, float]  # the ControlNet service's, after the warm-up
    base_metrics: dict[str, float]
    traffic: PodTraffic = PodTraffic()

    def profile(self) -> dict[str, object]:
        """The profile as a dict of `planner.profile.Profile` fields (validated by the planner)."""
        return derive(self.probes, self.steps, self.size, self.pod_start, self.cn_metrics, self.base_metrics,
                      backlogs=self.backlogs, traffic=self.traffic)

    def base_steps(self) -> list[tuple[tuple[float, float], float]]:
        """(span, seconds a step) of each plain request: what `base_step_seconds` is the median of."""
        return [(s.span, s.timings["denoise"] / self.steps) for s in self.probes["0 ControlNets"].samples]


def measure(models: Path, *, size: int, steps: int, repeats: int, log: Callable[[str], None] = lambda _: None,
            launcher: Launcher | None = None, traffic: PodTraffic = PodTraffic()) -> Measurement:
    """Runs the services and the rounds. `launcher` starts the services as the pods to be
    planned run (a CPU limit, say), and they answer `traffic` throughout, as those pods do."""
    from swiftdiffusion.runtime.dev.synthetic_lora import lora_for_model_set

    controlnets = sorted(p.name for p in (models / "controlnets").iterdir())[: max(CONTROL_COUNTS)]
    loras = [LoraEntry(name=n, source=str(lora_for_model_set(models, n)), k=steps) for n in LORAS]
    one_controlnet = max(sum(f.stat().st_size for f in (models / "controlnets" / name).glob("*.safetensors"))
                         for name in controlnets)
    options = StackOptions.on_free_ports(models, threads=1, loras=loras, controlnet_cache_bytes=one_controlnet * 3 // 2,
                                         defaults=Defaults(steps=steps, guidance_scale=5.0, width=size, height=size))
    images = [_control_image(size, i) for i in range(len(controlnets))]
    ports = (options.base_metrics_port, options.controlnet_metrics_port)
    with tempfile.TemporaryDirectory(prefix="swiftdiffusion-profile-") as folder:
        started = time.monotonic()
        with local_stack(options, Path(folder), launcher=launcher) as stack, \
                traffic.sent(ports, (stack.base.target, stack.controlnet.target)):
            pod_start = time.monotonic() - started
            log(f"both services serving after {pod_start:.1f} s")

            def request(count: int, lora: int = 0) -> Callable[[int], object]:
                return lambda seed: generate_request(
                    "a red cube", seed=seed, steps=steps, width=size, height=size, guidance_scale=5.0,
                    controlnets=[(controlnets[i], images[i], None) for i in range(count)],
                    loras=[(n, None) for n in LORAS[:lora]])

            # The backlog's requests alone go last in a round, right before its queue: the VM's
            # speed drifts within a round (docs/calibration.md).
            probes = {f"{n} LoRAs": Probe(stack.base.target, ports, request(0, n)) for n in (1, 2)}
            probes |= {f"{n} ControlNets": Probe(stack.base.target, ports, request(n))
                       for n in sorted(CONTROL_COUNTS, key=lambda n: n in BACKLOG_COUNTS)}
            for probe in probes.values():  # warm-up: every model loaded, every code path run once
                probe.once(seed=0)
                probe.samples.clear()
            cn_metrics, base_metrics = scrape(options.controlnet_metrics_port), scrape(options.base_metrics_port)
            backlogs = []
            for round_ in range(repeats):  # interleaved, so drift falls on every set-up alike
                for name, probe in probes.items():
                    sample = probe.once(seed=1 + round_)
                    log(f"round {round_ + 1}/{repeats} {name}: {sample.timings.get('total', 0.0):.3f} s")
                backlogs.append(backlog(stack.base.target, [request(n) for n in BACKLOG_COUNTS] * QUEUE_DEPTH,
                                        options.controlnet_metrics_port))
                log(f"round {round_ + 1}/{repeats} backlog of {QUEUE_DEPTH}: "
                    f"{backlogs[-1].seconds / backlogs[-1].requests:.3f} s a request")
    return Measurement(probes, backlogs, steps, size, pod_start, cn_metrics, base_metrics, traffic)


def backlog(target: str, requests: Sequence[Callable[[int], object]], controlnet_metrics_port: int) -> Backlog:
    """`requests` while `QUEUE_DEPTH` clients keep the service's queue full; their ControlNet
    loads (which hold the base service's worker) are taken out."""
    before, started = scrape(controlnet_metrics_port), time.monotonic()
    with ThreadPoolExecutor(QUEUE_DEPTH) as clients:
        replies = list(clients.map(lambda pair: generate(target, pair[1](100 + pair[0]), timeout=600),
                                   enumerate(requests)))
    elapsed = time.monotonic() - started
    return Backlog(elapsed - _loads(scrape(controlnet_metrics_port), before)[1], len(requests),
                   [_decode(reply.timings) for reply in replies])


def _served(sample: Sample) -> float:
    """The request's time in the service less its wait for the worker and its ControlNet loads."""
    return sample.timings["total"] - sample.timings.get("queue", 0.0) - sample.load_seconds


def derive(probes: dict[str, Probe], steps: int, size: int, pod_start: float, cn_metrics: dict[str, float],
           base_metrics: dict[str, float], backlogs: Sequence[Backlog],
           traffic: PodTraffic = PodTraffic()) -> dict[str, object]:
    """Profile fields from the samples (medians over the rounds); `backlogs`: each round's
    queue of the `BACKLOG_COUNTS` requests; `cn_metrics`: the ControlNet service's after the
    warm-up (its cache holds one ControlNet)."""
    plain = probes["0 ControlNets"]
    base_step = plain.median(lambda s: s.timings["denoise"] / steps)
    fixed = plain.median(lambda s: _served(s) - s.timings["denoise"])
    with_cn = [(n, probes[f"{n} ControlNets"]) for n in CONTROL_COUNTS if n]
    cn_step = statistics.median(p.median(lambda s: s.controlnet_compute) / n for n, p in with_cn)
    transfer = statistics.median(p.median(lambda s: max(0.0, s.round_trip - s.controlnet_compute)) for _, p in with_cn)
    open_per_cn = statistics.median(p.median(lambda s: s.timings.get("controlnet_open", 0.0) - s.load_seconds) / n
                                    for n, p in with_cn)
    # The encoder is the round trip less the wait, seen where the loop waited at all; where it
    # never waited, the ControlNets are faster than the encoder and the biggest round trip bounds it.
    waited = [p.median(lambda s: s.round_trip - s.timings.get("residual_wait", 0.0) / steps)
              for _, p in with_cn if p.median(lambda s: s.timings.get("residual_wait", 0.0)) > 0.01 * steps * base_step]
    encoder = statistics.median(waited) if waited else max(p.median(lambda s: s.round_trip) for _, p in with_cn)
    # The base replica's own work on the exchange shares its device with the encoder: what one
    # ControlNet adds to a plain step is that work where the encoder's path binds, and where the
    # ControlNet's binds, a bound no step with more ControlNets or a slower pod goes below anyway.
    exchange = max(0.0, probes["1 ControlNets"].median(lambda s: s.timings["denoise"] / steps) - base_step)
    decode = plain.median(lambda s: _decode(s.timings))
    # A backlog's first request has the worker at once and each later one takes it as the one
    # before frees it: `seconds` = alone + (requests - 1) x (alone - decode) x queued_slowdown.
    queued = []
    for round_, queue in enumerate(backlogs):
        alone = [probes[f"{n} ControlNets"].samples[round_] for n in BACKLOG_COUNTS]
        served = statistics.mean(_served(s) for s in alone)
        worker = served - statistics.mean(_decode(s.timings) for s in alone)
        queued.append((queue.seconds - served) / ((queue.requests - 1) * worker))
    decodes = [d for queue in backlogs for d in queue.decodes]
    plain_loop = plain.median(lambda s: s.timings["denoise"])
    merges = [(probes[f"{n} LoRAs"].median(lambda s: s.timings["denoise"]) - plain_loop) / n for n in (1, 2)]
    lora_load = _mean(base_metrics, {}, names.LORA_LOAD_SECONDS)
    merge = max(0.0, statistics.mean(merges))
    samples = [s for _, p in with_cn for s in p.samples]
    loads = sum(s.loads for s in samples)
    controlnet_load = (sum(s.load_seconds for s in samples) / loads if loads
                       else _mean(cn_metrics, {}, names.MODEL_LOAD_SECONDS, kind="controlnet"))
    return {
        "source": (f"measured by `swiftdiffusion profile` on {datetime.date.today().isoformat()}: the runtime's "
                   f"services on this machine, one intra-op thread each, {size} px, {steps} steps, medians of "
                   f"{len(plain.samples)} interleaved rounds (each with a backlog of {QUEUE_DEPTH} clients; "
                   f"the services answering {traffic.describe()}), "
                   f"from the replies' phase timings and the services' "
                   f"/metrics (ControlNet loads from the rounds' misses: the service's cache holds one ControlNet); "
                   f"latent_parallel_speedup is not measured (it needs a second device: see "
                   f"bench/cfg_bench.py) and is 1.0; monolithic_lora_seconds is our load plus merge before the loop"),
        "reference_width": size,
        "reference_height": size,
        "base_step_seconds": base_step,
        "encoder_fraction": min(1.0, encoder / base_step),
        "controlnet_step_seconds": cn_step,
        "residual_transfer_seconds": transfer,
        "residual_exchange_seconds": exchange,
        "queued_slowdown": statistics.median(queued),
        "decode_seconds": decode,
        "queued_decode_slowdown": statistics.median(decodes) / decode if decode and decodes else 1.0,
        "controlnet_open_seconds": open_per_cn,
        "fixed_seconds": fixed,
        "latent_parallel_speedup": 1.0,
        "controlnet_load_seconds": controlnet_load,
        "controlnet_bytes": int(cn_metrics.get(names.CONTROLNET_RESIDENT_BYTES, 0.0)),
        "lora_load_seconds": lora_load,
        "lora_merge_seconds": merge,
        "monolithic_lora_seconds": lora_load + merge,
        "pod_start_seconds": pod_start,
    }
