"""Trace CSV: a round trip, and bad lines named by line number and field."""
from __future__ import annotations

from pathlib import Path

import pytest

from swiftdiffusion.planner import trace
from swiftdiffusion.planner.trace import Request
from tests.planner.helpers import workflow

WORKFLOWS = {"w": workflow("w", controlnets=("canny", "depth"))}
HEADER = ",".join(trace.COLUMNS)


def test_a_written_trace_reads_back_the_same(tmp_path: Path) -> None:
    requests = [Request(0.5, "w", ("canny", "depth"), ("lora-00001",), 30, 1024, 768), Request(1.25, "w", (), (), 20, 64, 64)]
    trace.write(tmp_path / "t.csv", requests)
    assert trace.read(tmp_path / "t.csv", WORKFLOWS) == requests


@pytest.mark.parametrize(("line", "problem"), [
    ("2.0,nope,,,30,64,64", "workflow: unknown workflow 'nope'"),
    ("0.5,w,,,30,64,64", "arrival_seconds: 0.5 is before the previous line's 1.0"),
    ("2.0,w,canny;pose,,30,64,64", "controlnets: 'pose' is not a ControlNet of workflow 'w'"),
    ("2.0,w,,../etc/passwd,30,64,64", "loras: '../etc/passwd' is not a LoRA name"),
    ("2.0,w,,,thirty,64,64", "invalid literal for int()"),
])
def test_a_bad_line_is_named_by_its_line_number_and_field(tmp_path: Path, line: str, problem: str) -> None:
    path = tmp_path / "t.csv"
    path.write_text(f"{HEADER}\n1.0,w,canny,,30,64,64\n{line}\n")
    with pytest.raises(trace.TraceError) as e:
        trace.read(path, WORKFLOWS)
    assert str(e.value).startswith(f"{path}:3: ") and problem in str(e.value)


def test_a_wrong_header_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("time,workflow\n1.0,w\n")
    with pytest.raises(trace.TraceError, match=":1: header must be arrival_seconds,workflow"):
        trace.read(path, WORKFLOWS)
