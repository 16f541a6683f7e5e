"""`swiftdiffusion trace` and `swiftdiffusion simulate`: argparse only at import time, so the
runtime's CLI can register them without importing the planner."""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

DEFAULT_PROFILE = Path(__file__).parent / "profiles" / "h800-paper.json"


def _add_trace_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("workflows", type=Path, nargs="+", help="T2IWorkflow YAML files")
    parser.add_argument("--mix", choices=("A", "B"), default="A", help="the paper's service A or B mix")
    parser.add_argument("--shape", choices=("constant", "poisson", "diurnal", "bursty"), default="poisson")
    parser.add_argument("--rate", type=float, default=1.0, help="mean requests per second")
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of arrivals")
    parser.add_argument("--seed", type=int, default=0)


def add_trace_arguments(parser: argparse.ArgumentParser) -> None:
    _add_trace_arguments(parser)
    parser.add_argument("--out", type=Path, default=Path("out/trace.csv"))


def add_simulate_arguments(parser: argparse.ArgumentParser) -> None:
    _add_trace_arguments(parser)
    parser.add_argument("--trace", type=Path, help="a trace CSV (default: generate one from the options above)")
    parser.add_argument("--profile", type=Path, default=DEFAULT_PROFILE, help="service-time profile (JSON/YAML)")
    parser.add_argument("--design", choices=("applied", "monolithic", "decoupled", "shared", "shared-lp", "compare"),
                        default="applied", help="the workflows as written, one alternative, or compare: "
                                                "monolithic, shared and shared-lp on the same trace")
    parser.add_argument("--budget-gpus", type=int, metavar="N",
                        help="give every design N GPUs, held throughout, split between its pools by offered load "
                             "(autoscaling off); default: the pools as the workflows size them")
    parser.add_argument("--slo-seconds", type=float, default=10.0)
    parser.add_argument("--shared-cores", type=float, metavar="N",
                        help="every replica shares one host of N cores (a CPU test bed; time-sliced GPUs); "
                             "default: each replica has its own GPUs")
    parser.add_argument("--scrape-interval", type=float, metavar="SECONDS",
                        help="Prometheus's scrape interval for the runtime pods (the chart's ServiceMonitor: 30): "
                             "the HPA sees demand as of the last scrape; default: as of its sync")
    parser.add_argument("--out", type=Path, default=Path("out/simulate"))


def _generated(args: argparse.Namespace, workflows: list) -> list:
    from swiftdiffusion.planner import generate, mix

    arrivals = generate.Arrivals(shape=args.shape, rate=args.rate, duration=args.duration)
    return generate.requests(workflows, mix.MIXES[args.mix], arrivals, args.seed)


def run_trace(args: argparse.Namespace) -> int:
    from swiftdiffusion.planner import trace, workflows

    try:
        requests = _generated(args, workflows.load(args.workflows))
    except (workflows.WorkflowError, ValueError) as e:
        print(f"swiftdiffusion trace: {e}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    trace.write(args.out, requests)
    print(f"{len(requests)} requests -> {args.out}")
    return 0


def run_simulate(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from swiftdiffusion.planner import compare, fleet, profile, trace, workflows

    try:
        wfs = workflows.load(args.workflows)
        requests = trace.read(args.trace, {wf.name: wf for wf in wfs}) if args.trace else _generated(args, wfs)
        prof = profile.load(args.profile)
    except (workflows.WorkflowError, trace.TraceError, ValidationError, ValueError, OSError) as e:
        print(f"swiftdiffusion simulate: {e}", file=sys.stderr)
        return 2
    designs = fleet.COMPARED if args.design == "compare" else (args.design,)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{args.out.name}-", dir=args.out.parent))
    trace.write(staging / "trace.csv", requests)
    rows = []
    try:
        for design in designs:
            rows.append(compare.run_design(wfs, requests, prof, design, args.slo_seconds,
                                           staging if len(designs) == 1 else staging / design, args.shared_cores,
                                           args.budget_gpus, args.scrape_interval))
    except ValueError as e:  # a SimulationError, or a budget short of one replica per pool
        shutil.rmtree(staging)
        print(f"swiftdiffusion simulate: design {design}: {e}", file=sys.stderr)
        return 2
    (staging / "comparison.csv").write_text(compare.table_csv(rows))
    shutil.rmtree(args.out, ignore_errors=True)
    staging.rename(args.out)  # nothing is half-written: the outputs appear together
    print(compare.table_text(rows, args.slo_seconds))
    print(f"outputs in {args.out}")
    return 0
