"""How Flux (and cli-utils, `kubectl wait`-style tools) read a T2IWorkflow's health.

They judge custom resources with kstatus (`sigs.k8s.io/cli-utils/pkg/kstatus/status.Compute`),
run here as a small Go wrapper built by the test bed. The inputs are the Argo CD testdata:
workflows as the operator reported them on the test bed, kept to the operator's current
status shape by tests/gitops/test_argocd_health_cluster.py.
"""
from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from tests.gitops.argocd import load_testdata
from tests.testbed import build

def kstatus(obj: dict[str, Any]) -> dict[str, str]:
    binary = build.ensure_built() / "kstatus"
    done = subprocess.run([binary], input=json.dumps(obj), capture_output=True, text=True, check=True, timeout=30)
    return json.loads(done.stdout)


@pytest.mark.parametrize(("testdata", "expected"), [
    ("healthy.yaml", "Current"),
    ("suspended.yaml", "Current"),  # scaled to zero on purpose: nothing left to roll out
    ("progressing-rolling-out.yaml", "InProgress"),
    ("progressing-generation-lag.yaml", "InProgress"),
    ("degraded-progress-deadline.yaml", "Failed"),  # Stalled: waiting will not fix it
    ("degraded-refused-child.yaml", "Failed"),
])
def test_kstatus_reads_the_workflow_as_flux_should(testdata: str, expected: str) -> None:
    assert kstatus(load_testdata(f"testdata/{testdata}"))["status"] == expected


def test_generation_lag_reads_in_progress_whatever_the_conditions_say() -> None:
    lagging = load_testdata("testdata/progressing-generation-lag.yaml")
    assert {c["type"]: c["status"] for c in lagging["status"]["conditions"]}["Ready"] == "True"
    verdict = kstatus(lagging)
    assert verdict == {"status": "InProgress", "message": "T2IWorkflow generation is 2, but latest observed "
                                                          "generation is 1"}


def test_rolling_out_says_which_pools_are_not_ready() -> None:
    verdict = kstatus(load_testdata("testdata/progressing-rolling-out.yaml"))
    assert verdict["message"] == "base pool swd-wf-base 1/1 ready; controlnet pool swd-wf-cn 0/1 ready"
