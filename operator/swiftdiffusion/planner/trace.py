"""The trace CSV: one request per line, arrivals in non-decreasing order.

Columns: arrival_seconds, workflow, controlnets, loras, steps, width, height. ControlNets
and LoRAs are `;`-separated names (empty for none). A bad line is reported with its line
number and field, and nothing is read past it.
"""
from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from swiftdiffusion.operator import model as m

COLUMNS = ("arrival_seconds", "workflow", "controlnets", "loras", "steps", "width", "height")
LORA_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # a model-store name, as the runtime's LoRA store takes


class TraceError(ValueError):
    """A trace line the planner cannot replay."""


@dataclass(frozen=True, slots=True)
class Request:
    arrival: float
    workflow: str
    controlnets: tuple[str, ...]
    loras: tuple[str, ...]
    steps: int
    width: int
    height: int


def _names(text: str) -> tuple[str, ...]:
    return tuple(name for name in text.split(";") if name)


def _check(request: Request, workflows: Mapping[str, m.Workflow], previous: float) -> str | None:
    """Why `request` cannot be replayed, or None."""
    wf = workflows.get(request.workflow)
    if wf is None:
        return f"workflow: unknown workflow {request.workflow!r}"
    if request.arrival < previous:
        return f"arrival_seconds: {request.arrival} is before the previous line's {previous}"
    declared = {cn.name for cn in wf.spec.controlnets}
    unknown = [cn for cn in request.controlnets if cn not in declared]
    if unknown:
        return f"controlnets: {unknown[0]!r} is not a ControlNet of workflow {wf.name!r}"
    bad = [lora for lora in request.loras if not LORA_NAME.match(lora)]
    if bad:
        return f"loras: {bad[0]!r} is not a LoRA name the model store can hold"
    if min(request.steps, request.width, request.height) < 1:
        return "steps/width/height: must be positive"
    return None


def read(path: Path, workflows: Mapping[str, m.Workflow]) -> list[Request]:
    """Every request of the trace at `path`, checked against `workflows` (by name)."""
    requests: list[Request] = []
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != COLUMNS:
            raise TraceError(f"{path}:1: header must be {','.join(COLUMNS)}")
        for row in reader:
            where = f"{path}:{reader.line_num}"
            try:
                request = Request(float(row["arrival_seconds"]), row["workflow"], _names(row["controlnets"]),
                                  _names(row["loras"]), int(row["steps"]), int(row["width"]), int(row["height"]))
            except (TypeError, ValueError) as e:
                raise TraceError(f"{where}: {e}") from None
            problem = _check(request, workflows, requests[-1].arrival if requests else 0.0)
            if problem:
                raise TraceError(f"{where}: {problem}")
            requests.append(request)
    return requests


def write(path: Path, requests: Iterable[Request]) -> None:
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(COLUMNS)
        for r in requests:
            out.writerow([f"{r.arrival:.6f}", r.workflow, ";".join(r.controlnets), ";".join(r.loras),
                          r.steps, r.width, r.height])
