"""bench/gpu.sh --dry-run: the GPU benchmark's whole code path on CPU, tiny models.

The real run needs a CUDA GPU; this proves everything else works before anyone spends GPU
time on it: the model build, both set-ups on every workload (the ControlNet service in its
own process included), the ratios, the FLOP count and the JSON, with no process left behind.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
WORKLOADS = {"0C/0L": (0, 0), "1C/1L": (1, 1), "3C/2L": (3, 2)}


def processes_in_session(session: int) -> list[int]:
    """Live processes whose session id is `session` (the benchmark and everything it started)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended while we looked
            continue
        if int(fields[3]) == session and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, list[int]]:
    """The JSON a dry run writes, and the processes of its session still alive after it ended."""
    folder = tmp_path_factory.mktemp("gpu-bench")
    out = folder / "results.json"
    command = [str(REPO / "bench" / "gpu.sh"), "--dry-run", "--out", str(out), "--models", str(folder / "models")]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        log, _ = process.communicate(timeout=300)
        left_behind = processes_in_session(process.pid)
    finally:
        if process.poll() is None or processes_in_session(process.pid):
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 0, log[-6000:]
    return json.loads(out.read_text()), left_behind


@pytest.mark.slow
def test_every_workload_is_timed_for_both_paths(dry_run: tuple[dict, list[int]]) -> None:
    results, _ = dry_run
    assert results["settings"]["device"] == "cpu" and results["settings"]["size"] == "tiny"
    assert set(results["workloads"]) == set(WORKLOADS)
    for name, (controlnets, loras) in WORKLOADS.items():
        workload = results["workloads"][name]
        assert (workload["controlnets"], workload["loras"]) == (controlnets, loras)
        assert set(workload["setups"]) == {"diffusers", "ours"}
        for stats in workload["setups"].values():
            assert len(stats["seconds"]) == results["settings"]["repeats"] == 1
            assert all(seconds > 0 for seconds in stats["seconds"])
            assert 0 < stats["min"] <= stats["median"] <= stats["max"]
        setups = workload["setups"]
        assert workload["ratios"]["diffusers/ours"] == pytest.approx(setups["diffusers"]["median"] / setups["ours"]["median"])


@pytest.mark.slow
def test_our_path_used_the_controlnet_service_only_when_asked(dry_run: tuple[dict, list[int]]) -> None:
    results, _ = dry_run
    for name, (controlnets, _) in WORKLOADS.items():
        phases = results["workloads"][name]["setups"]["ours"]["phases_median"]
        assert phases["denoise"] > 0
        assert ("controlnet_open" in phases) == (controlnets > 0)


@pytest.mark.slow
def test_unet_flops_are_counted_and_the_peak_share_is_left_to_gpus(dry_run: tuple[dict, list[int]]) -> None:
    unet = dry_run[0]["unet"]
    assert unet["latent"] == [2, 4, 8, 8]  # CFG batch, 64 px / 8
    assert unet["flops"] > 0 and unet["step_seconds"] > 0
    assert unet["fraction_of_peak"] is None and unet["peak_source"] == "n/a on CPU"


@pytest.mark.slow
def test_latent_parallelism_is_skipped_without_two_gpus_and_nothing_is_left_running(dry_run: tuple[dict, list[int]]) -> None:
    results, left_behind = dry_run
    assert "needs two CUDA GPUs" in results["latent_parallelism_skipped"]
    assert left_behind == []
