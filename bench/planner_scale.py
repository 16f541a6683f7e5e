"""The planner at scale (issue 13, "Scale"): one simulated day of a ~1,000-GPU fleet with 200
workflows and the Katz paper's mix A. Not a timed test: it prints what one run took.

- Workflows: 200 T2IWorkflows written as YAML and loaded as `swiftdiffusion simulate`
  loads them, cycling through the shapes of examples/*.yaml: SDXL at 1024 px, 30 steps
  (50 with latent parallelism, on two-GPU pods, one workflow in four), one or two declared
  LoRAs, and four ControlNets each (two of mix A's top five, two from its tail of 47).
  Every base pool autoscales (1-12 replicas; 1-6 with two GPUs), and every ten workflows
  share one ControlNet pool (1-3 replicas per member: the operator's shared bounds make
  it 1-30, cache 32 GiB).
- Trace: mix A with diurnal arrivals (trough at midnight, peak at noon, amplitude 0.8) at
  `--rate` mean requests per second, generated lazily while it is replayed; outcomes are
  kept as per-workflow latency histograms, so memory does not grow with the trace.
- Profile: `h800-paper.json` (the paper's published SDXL-on-H800 numbers).

`--hours H` replays the first H hours (from the midnight trough: a smoke run, with a
smaller fleet and fewer events per second than the whole day). Method: one run, wall-clock
and CPU seconds for generating and replaying the trace together (`--generate-only` times
the trace alone; on a shared machine CPU seconds say more than wall-clock ones); peak RSS
from getrusage.

    .venv/bin/python bench/planner_scale.py               # the full day
    .venv/bin/python bench/planner_scale.py --hours 1     # the first hour
"""
from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import harness
import yaml

from swiftdiffusion.operator import model as m
from swiftdiffusion.planner import cli, fleet, generate, mix, profile, report, workflows
from swiftdiffusion.planner.simulate import Simulation

DAY = 86400.0
WORKFLOWS = 200
PER_SHARED_POOL = 10
RATE = 30.0  # mean requests/s: with this fleet, about 1,000 GPUs held at the noon peak
SLO_SECONDS = 10.0
MIX = mix.SERVICE_A
SDXL = "stabilityai/stable-diffusion-xl-base-1.0"
EXAMPLE_LORA_KS = ((8, None), (6,), (None, 8), (10,))  # each example's LoRAs' `k` (None: balDefaultK)


def _autoscaled(max_replicas: int) -> dict[str, Any]:
    return {"autoscaling": {"enabled": True, "minReplicas": 1, "maxReplicas": max_replicas,
                            "targetInFlightPerReplica": 2}}


def document(i: int) -> dict[str, Any]:
    """Workflow i: the shape of example i % 4 (sdxl-canny-depth, product-shots,
    character-poses, sdxl-latent-parallel: their steps, LoRAs' K and GPUs), with four
    ControlNets: two of the catalogue's top five, then two of its tail."""
    top, tail = MIX.top_k, MIX.distinct_controlnets - MIX.top_k
    catalogue = [i % top, (i + 1) % top, top + (2 * i) % tail, top + (2 * i + 1) % tail]
    shape = i % 4
    loras = [{"name": f"lora-{i}-{j}", "source": f"/models/loras/lora-{i}-{j}.safetensors", **({"k": k} if k else {})}
             for j, k in enumerate(EXAMPLE_LORA_KS[shape])]
    spec: dict[str, Any] = {
        "base": {"model": SDXL, "defaults": {"steps": 50 if shape == 3 else 30}},
        "controlnets": [{"name": f"cn-{c:02d}", "model": f"org/controlnet-{c:02d}-sdxl"} for c in catalogue],
        "loras": loras,
        "basePool": {"gpus": 2, **_autoscaled(6)} if shape == 3 else _autoscaled(12),
        "controlnetPool": {"sharedPoolName": f"group-{i // PER_SHARED_POOL:02d}", **_autoscaled(3)},
    }
    if shape == 3:
        spec["serving"] = {"latentParallelism": "Enabled"}
    return {"apiVersion": "swiftdiffusion.io/v1alpha1", "kind": m.KIND, "metadata": {"name": f"wf-{i:03d}"},
            "spec": spec}


def load_workflows(count: int) -> list[m.Workflow]:
    """The workflows through the planner's own loader (file -> CRD model), as the CLI reads them."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "workflows.yaml"
        path.write_text(yaml.safe_dump_all([document(i) for i in range(count)]))
        return workflows.load([path])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hours", type=float, default=24.0, help="replay the first H hours of the day")
    parser.add_argument("--rate", type=float, default=RATE, help="mean requests per second over the day")
    parser.add_argument("--workflows", type=int, default=WORKFLOWS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--generate-only", action="store_true", help="time generating the trace alone")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the results to FILE")
    args = parser.parse_args()
    start = harness.header(f"planner scale: {args.workflows} workflows, mix {MIX.name}, diurnal, "
                           f"{args.hours:g} h at {args.rate:g} requests/s mean", "one run")
    wfs = load_workflows(args.workflows)
    duration = min(DAY, args.hours * 3600)
    arrivals = generate.Arrivals(shape="diurnal", rate=args.rate, duration=duration)
    trace = generate.stream(wfs, MIX, arrivals, args.seed)
    started, cpu_started = time.perf_counter(), time.process_time()
    if args.generate_only:
        requests = sum(1 for _ in trace)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        print(f"  generated {requests:,} requests in {seconds:.1f} s ({cpu:.1f} s CPU): "
              f"{requests / seconds:,.0f} requests/s")
        return 0
    plan = fleet.build(wfs)
    result = Simulation(plan, wfs, profile.load(cli.DEFAULT_PROFILE)).run(trace, keep_outcomes=False)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    summary = report.summary(result, SLO_SECONDS)
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    results = {"pools": len(plan.pools), "requests": summary["requests"], "events": summary["events"],
               "seconds": seconds, "cpu_seconds": cpu, "events_per_second": summary["events"] / seconds,
               "peak_gpus": summary["peak_gpus"], "gpu_hours": summary["gpu_hours"], "peak_rss_mib": rss_mib,
               "p50": summary["p50"], "p95": summary["p95"], "slo_seconds": SLO_SECONDS,
               "slo_attainment": sum(w["slo_attainment"] * w["requests"] for w in summary["workflows"].values())
               / summary["requests"], "controlnet_cache_hit_rate": summary["controlnet_cache_hit_rate"]}
    print(f"  {len(wfs)} workflows, {results['pools']} pools; {results['requests']:,} requests, "
          f"{results['events']:,} events in {seconds:.1f} s ({cpu:.1f} s CPU): "
          f"{results['events_per_second']:,.0f} events/s")
    print(f"  peak GPUs {results['peak_gpus']}, {results['gpu_hours']:,.0f} GPU-hours; peak RSS {rss_mib:.0f} MiB")
    print(f"  latency p50 {results['p50']:.2f} s, p95 {results['p95']:.2f} s (histograms: within 0.1%); "
          f"<= {SLO_SECONDS:g} s {results['slo_attainment']:.1%}; "
          f"ControlNet cache hits {results['controlnet_cache_hit_rate']:.1%}")
    harness.write_json(args.json, "planner_scale", vars(args) | {"json": None}, start, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
