"""One trace through each design, and the cost-versus-latency table that compares them."""
from __future__ import annotations

import dataclasses

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from swiftdiffusion.operator import model as m
from swiftdiffusion.planner import budget, fleet, report
from swiftdiffusion.planner.profile import Profile
from swiftdiffusion.planner.simulate import Result, Simulation
from swiftdiffusion.planner.trace import Request


@dataclass(frozen=True)
class Row:
    design: str
    gpu_hours: float
    peak_gpus: int
    p50: float
    p95: float
    slo_attainment: float
    cache_hit_rate: float | None


def simulate(workflows: Sequence[m.Workflow], requests: Sequence[Request], profile: Profile, design: str,
             shared_cores: float | None = None, budget_gpus: int | None = None,
             scrape_interval: float | None = None) -> tuple[Simulation, Result]:
    """`design` (see `fleet.design_workflows`) replays `requests`; with `budget_gpus`, its pools
    are first provisioned with that many GPUs (`budget`)."""
    monolithic = design == fleet.MONOLITHIC
    wfs = fleet.design_workflows(workflows, design)
    if budget_gpus is not None:
        wfs = budget.within_budget(wfs, requests, profile, budget_gpus, monolithic=monolithic)
    plan = dataclasses.replace(fleet.build(wfs, monolithic=monolithic), scrape_interval=scrape_interval)
    sim = Simulation(plan, wfs, profile, monolithic=monolithic, shared_cores=shared_cores)
    return sim, sim.run(requests)


def run_design(workflows: Sequence[m.Workflow], requests: Sequence[Request], profile: Profile, design: str,
               slo_seconds: float, folder: Path, shared_cores: float | None = None,
               budget_gpus: int | None = None, scrape_interval: float | None = None) -> Row:
    _, result = simulate(workflows, requests, profile, design, shared_cores, budget_gpus, scrape_interval)
    summary = report.summary(result, slo_seconds)
    report.write(folder, result, summary)
    met = sum(w["slo_attainment"] * w["requests"] for w in summary["workflows"].values()) / max(1, len(requests))
    return Row(design, summary["gpu_hours"], summary["peak_gpus"], summary["p50"], summary["p95"], met,
               summary["controlnet_cache_hit_rate"])


def table_text(rows: Sequence[Row], slo_seconds: float) -> str:
    lines = [f"{'design':<12}{'GPU-hours':>11}{'peak GPUs':>11}{'p50 s':>9}{'p95 s':>9}"
             f"{f'<= {slo_seconds:g} s':>10}{'CN hits':>9}"]
    for r in rows:
        hits = "-" if r.cache_hit_rate is None else f"{r.cache_hit_rate:.1%}"
        lines.append(f"{r.design:<12}{r.gpu_hours:>11.3f}{r.peak_gpus:>11}{r.p50:>9.2f}{r.p95:>9.2f}"
                     f"{r.slo_attainment:>10.1%}{hits:>9}")
    return "\n".join(lines)


def table_csv(rows: Sequence[Row]) -> str:
    lines = ["design,gpu_hours,peak_gpus,p50_seconds,p95_seconds,slo_attainment,controlnet_cache_hit_rate"]
    lines += [f"{r.design},{r.gpu_hours:.6f},{r.peak_gpus},{r.p50:.6f},{r.p95:.6f},{r.slo_attainment:.6f},"
              f"{'' if r.cache_hit_rate is None else f'{r.cache_hit_rate:.6f}'}" for r in rows]
    return "\n".join(lines) + "\n"
