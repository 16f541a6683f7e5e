"""What a run means to a planner: latency percentiles, SLO attainment, GPU-hours, peak GPUs,
replica timelines, cache hit rate and BAL's blocked time; written as JSON and CSV (and PNG
plots when matplotlib is installed)."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from swiftdiffusion.planner import latency
from swiftdiffusion.planner.latency import percentile as percentile  # the nearest-rank rule, for callers
from swiftdiffusion.planner.simulate import Result


def peak_gpus(result: Result) -> int:
    """The most GPUs held at once: a replica holds its pool's GPUs from creation (it costs while
    it starts) until it is removed (a draining one still holds them)."""
    changes = sorted((t, delta) for state in result.pools.values() for replica in state.replicas
                     for t, delta in ((replica.created, state.model.gpus), (replica.removed, -state.model.gpus)))
    held = peak = 0
    for _, delta in changes:  # at one instant, releases (negative) sort before acquisitions
        held += delta
        peak = max(peak, held)
    return peak


def summary(result: Result, slo_seconds: float) -> dict[str, Any]:
    """Percentiles and SLO attainment are exact when the run kept every outcome, and from its
    latency histograms (`latency.py`: within 0.1%) when it did not."""
    workflows = {}
    for name, latencies in sorted(result.latencies.items()):
        workflows[name] = {"requests": latencies.count, "p50": latencies.percentile(50),
                           "p95": latencies.percentile(95), "p99": latencies.percentile(99),
                           "slo_attainment": latencies.within(slo_seconds)}
    everything = latency.merged(list(result.latencies.values()))
    pools = {}
    for name, state in result.pools.items():
        seconds = sum(r.removed - r.created for r in state.replicas)
        pools[name] = {"role": state.model.role, "gpus_per_replica": state.model.gpus,
                       "gpu_hours": seconds * state.model.gpus / 3600,
                       "max_replicas": max(n for _, n in state.timeline), "timeline": state.timeline}
    lookups = sum(result.cache_lookups.values())
    return {
        "requests": everything.count, "simulated_seconds": result.end, "events": result.events,
        "slo_seconds": slo_seconds,
        "p50": everything.percentile(50) if everything.count else None,
        "p95": everything.percentile(95) if everything.count else None,
        "gpu_hours": sum(p["gpu_hours"] for p in pools.values()), "peak_gpus": peak_gpus(result),
        "controlnet_cache_hit_rate": sum(result.cache_hits.values()) / lookups if lookups else None,
        "lora_blocked_requests": result.lora_blocked_requests, "lora_blocked_seconds": result.lora_blocked_seconds,
        "workflows": workflows, "pools": pools,
    }


def write(folder: Path, result: Result, report: dict[str, Any]) -> list[Path]:
    """summary.json, replicas.csv and, when the run kept every outcome, requests.csv in `folder`,
    plus plots if matplotlib is there."""
    folder.mkdir(parents=True, exist_ok=True)
    written = [folder / "summary.json", folder / "replicas.csv"]
    written[0].write_text(json.dumps(report, indent=2) + "\n")
    with written[1].open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["pool", "seconds", "replicas"])
        for name, pool in report["pools"].items():
            out.writerows([name, f"{t:.3f}", n] for t, n in pool["timeline"])
    if result.outcomes is not None:
        written.append(folder / "requests.csv")
        with written[-1].open("w", newline="") as f:
            out = csv.writer(f)
            out.writerow(["arrival_seconds", "workflow", "start_seconds", "finish_seconds", "latency_seconds",
                          "lora_blocked_seconds"])
            for o in result.outcomes:
                out.writerow([f"{o.arrival:.6f}", o.workflow, f"{o.start:.6f}", f"{o.finish:.6f}",
                              f"{o.latency:.6f}", f"{o.lora_blocked_seconds:.6f}"])
    return written + plot(folder, result, report)


def plot(folder: Path, result: Result, report: dict[str, Any]) -> list[Path]:
    try:
        import matplotlib
    except ImportError:
        return []
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name in report["workflows"]:
        ax.plot(*result.latencies[name].cdf(), label=name)
    ax.axvline(report["slo_seconds"], color="grey", linestyle="--", label="SLO")
    ax.set(xlabel="latency (s)", ylabel="share of requests", title="Latency CDF per workflow")
    ax.legend(fontsize="small")
    latency = folder / "latency.png"
    fig.savefig(latency, dpi=100, bbox_inches="tight")
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, pool in report["pools"].items():
        times, counts = zip(*[*pool["timeline"], (report["simulated_seconds"], pool["timeline"][-1][1])])
        ax.step(times, counts, where="post", label=name)
    ax.set(xlabel="time (s)", ylabel="replicas", title="Replicas per pool")
    ax.legend(fontsize="small")
    replicas = folder / "replicas.png"
    fig.savefig(replicas, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return [latency, replicas]
