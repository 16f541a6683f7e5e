"""`swiftdiffusion trace` and `swiftdiffusion simulate` on the repository's examples."""
from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest

from swiftdiffusion.runtime.cli import main

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted(str(p) for p in (ROOT / "examples").glob("*.yaml"))
WORKFLOWS = {"sdxl-canny-depth", "sdxl-latent-parallel", "product-shots", "character-poses"}


def test_simulate_compares_the_designs_on_a_generated_trace(tmp_path: Path, capsys) -> None:
    trace = tmp_path / "trace.csv"
    assert main(["trace", *EXAMPLES, "--shape", "bursty", "--rate", "0.5", "--duration", "300", "--seed", "1",
                 "--out", str(trace)]) == 0
    capsys.readouterr()
    out = tmp_path / "sim"
    assert main(["simulate", *EXAMPLES, "--trace", str(trace), "--design", "compare", "--out", str(out)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in table[1:4]] == ["monolithic", "shared", "shared-lp"]  # (a), (b), (c)
    rows = list(csv.DictReader((out / "comparison.csv").open()))
    assert [r["design"] for r in rows] == ["monolithic", "shared", "shared-lp"]
    summary = json.loads((out / "shared" / "summary.json").read_text())
    requests = sum(1 for _ in csv.DictReader(trace.open()))
    assert summary["requests"] == requests > 0
    assert set(summary["workflows"]) == WORKFLOWS
    assert "swd-cn-planner" in summary["pools"] and summary["gpu_hours"] > 0
    assert 0 < summary["controlnet_cache_hit_rate"] <= 1
    for name in ("requests.csv", "replicas.csv", "latency.png", "replicas.png"):
        assert (out / "monolithic" / name).stat().st_size > 0
    # Every base pool's replicas cost GPU time from start to the end of the run.
    assert min(p["gpu_hours"] for p in summary["pools"].values()) > 0


def test_at_an_equal_budget_every_design_holds_the_same_gpus(tmp_path: Path, capsys) -> None:
    out = tmp_path / "sim"
    args = ["simulate", *EXAMPLES, "--design", "compare", "--rate", "0.2", "--duration", "120", "--out", str(out)]
    assert main([*args, "--budget-gpus", "12"]) == 0
    assert "peak GPUs" in capsys.readouterr().out
    rows = list(csv.DictReader((out / "comparison.csv").open()))
    assert [r["peak_gpus"] for r in rows] == ["12", "12", "12"]
    lp = json.loads((out / "shared-lp" / "summary.json").read_text())["pools"]
    assert {p["gpus_per_replica"] for p in lp.values() if p["role"] == "base"} == {2}
    # Five GPUs are one replica per monolithic pool, one short of the shared designs' floor.
    assert main([*args, "--budget-gpus", "5"]) == 2
    assert "design shared: a budget of 5 GPUs is less than one replica per pool (6 GPUs)" in capsys.readouterr().err
    assert (out / "comparison.csv").read_text().count(",12,") == 3  # the last good outputs stay whole
    assert [p.name for p in tmp_path.iterdir()] == ["sim"]  # and no staging folder is left


def test_a_bad_trace_fails_naming_the_line_and_writes_nothing(tmp_path: Path, capsys) -> None:
    trace = tmp_path / "trace.csv"
    trace.write_text("arrival_seconds,workflow,controlnets,loras,steps,width,height\n"
                     "0.0,product-shots,canny,,30,1024,1024\n1.0,product-shots,openpose,,30,1024,1024\n")
    out = tmp_path / "sim"
    assert main(["simulate", *EXAMPLES, "--trace", str(trace), "--out", str(out)]) == 2
    assert f"{trace}:3: controlnets: 'openpose' is not a ControlNet of workflow 'product-shots'" in capsys.readouterr().err
    assert not out.exists()


def test_a_workflow_the_crd_would_refuse_is_named_by_field(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: swiftdiffusion.io/v1alpha1\nkind: T2IWorkflow\nmetadata: {name: bad}\n"
                   "spec: {base: {model: m}, basePool: {gpus: many}}\n")
    assert main(["simulate", str(bad), "--out", str(tmp_path / "sim")]) == 2
    assert "workflow 'bad': spec.basePool.gpus" in capsys.readouterr().err


@pytest.mark.parametrize("document", ["README.md", "docs/planner.md"])
def test_the_documented_comparison_is_what_its_command_prints(document: str, tmp_path: Path, capsys) -> None:
    """The table a reader sees beside the command is the one the current model prints."""
    text = (ROOT / document).read_text()
    command = re.search(r"^swiftdiffusion (simulate examples/\*\.yaml .*)$", text, re.MULTILINE)
    assert command, f"{document} shows no comparison command"
    table = re.search(r"```text\n(design .*?)```", text[command.end():], re.DOTALL)
    assert table, f"{document} shows no table after its command"
    args = command.group(1).split()
    assert main([args[0], *EXAMPLES, *args[2:], "--out", str(tmp_path / "sim")]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(table.group(1)), f"{document} shows a table the command no longer prints:\n{printed}"
