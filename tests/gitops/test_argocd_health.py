"""The Argo CD health check for T2IWorkflow: its verdicts, its sandbox, and the copies users apply."""
from __future__ import annotations

import copy
import pathlib
import re
import shlex
from typing import Any

import pytest
import yaml
from lupa.lua51 import LuaError

from swiftdiffusion.operator.status import PoolObservation, compute_status
from tests.chart.helm import CHART, Helm, by_kind
from tests.gitops.argocd import (
    CHART_VALUES,
    CM_KEY,
    CM_PATCH,
    CUSTOMIZATION,
    HEALTH_LUA,
    REPO,
    health_cases,
    load_testdata,
    run_health,
    status_shape,
)

DOCS = REPO / "docs" / "monitoring-gitops.md"
STATUSES = {"Healthy", "Progressing", "Degraded", "Suspended"}


@pytest.mark.parametrize("case", health_cases(), ids=lambda case: case["inputPath"])
def test_every_case_of_health_test_yaml_reads_as_expected(case: dict[str, Any]) -> None:
    assert run_health(load_testdata(case["inputPath"])) == case["healthStatus"]


def test_health_test_yaml_covers_every_status_and_every_testdata_file() -> None:
    cases = health_cases()
    assert {case["healthStatus"]["status"] for case in cases} == STATUSES
    listed = {case["inputPath"] for case in cases}
    on_disk = {f"testdata/{path.name}" for path in (CUSTOMIZATION / "testdata").glob("*.yaml")}
    assert listed == on_disk


@pytest.mark.parametrize("source, culprit", [
    ('return {status = string.upper("healthy")}', "string"),
    ("for _, c in ipairs(obj.status.conditions) do end return {status = 'Healthy'}", "ipairs"),
    ("hs = {status = 'Healthy'} return hs", "hs"),
])
def test_the_sandbox_gives_the_script_nothing_but_obj(source: str, culprit: str) -> None:
    """What Argo CD may not open for an argocd-cm script must fail here too, or the cases above prove nothing."""
    with pytest.raises(LuaError, match=f"global '{culprit}'"):
        run_health(load_testdata("testdata/healthy.yaml"), source)


def _healthy() -> dict[str, Any]:
    return copy.deepcopy(load_testdata("testdata/healthy.yaml"))


def test_a_ready_condition_older_than_the_top_level_generation_reads_progressing() -> None:
    """The operator writes one generation everywhere; a status where only Ready lags (built by
    hand from the captured healthy object) must still not read Healthy."""
    obj = _healthy()
    obj["metadata"]["generation"] = obj["status"]["observedGeneration"] = 2
    assert run_health(obj) == {"status": "Progressing", "message": "waiting for the operator to observe generation 2 "
                                                                   "(status is for generation 1)"}


def test_a_pool_on_its_way_to_zero_reads_progressing_until_it_gets_there() -> None:
    """Between the operator scaling a Deployment to 0 and the Deployment controller observing it,
    Ready is False with desiredReplicas 0 (built by hand from the captured suspended object)."""
    obj = copy.deepcopy(load_testdata("testdata/suspended.yaml"))
    message = "base pool swd-wf-base 1/0 ready; controlnet pool swd-wf-cn 1/0 ready"
    obj["status"]["conditions"][0].update(status="False", reason="PoolsNotReady", message=message)
    assert run_health(obj) == {"status": "Progressing", "message": message}


def _stringify_counts(value: Any) -> Any:
    """Integers as strings: how Argo CD hands over numbers it decoded as json.Number."""
    if isinstance(value, dict):
        return {k: _stringify_counts(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_stringify_counts(v) for v in value]
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


@pytest.mark.parametrize("input_path", ["testdata/healthy.yaml", "testdata/suspended.yaml"])
def test_numbers_handed_over_as_strings_read_the_same(input_path: str) -> None:
    expected = run_health(load_testdata(input_path))
    assert run_health(_stringify_counts(load_testdata(input_path))) == expected


def test_generations_handed_over_as_strings_compare_as_numbers() -> None:
    """"9" < "10" is false for strings: the check must compare generations as numbers."""
    obj = _healthy()
    obj["metadata"]["generation"] = 10
    obj["status"]["observedGeneration"] = 9
    for condition in obj["status"]["conditions"]:
        condition["observedGeneration"] = 9
    message = "waiting for the operator to observe generation 10 (status is for generation 9)"
    assert run_health(_stringify_counts(obj)) == {"status": "Progressing", "message": message}


def test_testdata_has_the_status_shape_the_operator_computes_now() -> None:
    """The cluster test compares against live objects; this catches a changed status.py without a cluster."""
    rolled_out = {"metadata": {"generation": 1}, "spec": {"replicas": 1},
                  "status": {"observedGeneration": 1, "replicas": 1, "readyReplicas": 1, "updatedReplicas": 1}}
    pools = [PoolObservation("base", "swd-wf-base", "swd-wf-base.default.svc:50051", rolled_out),
             PoolObservation("controlnet", "swd-wf-cn", "swd-wf-cn.default.svc:50051", rolled_out,
                             controlnets=("canny",))]
    status = compute_status(1, pools, {})
    for condition in status["conditions"]:
        del condition["lastTransitionTime"]  # trimmed from testdata
    assert status_shape({"status": status}) == status_shape(load_testdata("testdata/healthy.yaml"))


def test_the_argocd_cm_patch_carries_health_lua_and_needs_no_open_libs() -> None:
    patch = yaml.safe_load(CM_PATCH.read_text())
    assert (patch["kind"], patch["metadata"]["name"]) == ("ConfigMap", "argocd-cm")
    assert patch["metadata"]["labels"] == {"app.kubernetes.io/part-of": "argocd"}  # what Argo CD watches
    assert patch["data"] == {CM_KEY: HEALTH_LUA.read_text()}


def test_the_chart_values_carry_health_lua() -> None:
    assert yaml.safe_load(CHART_VALUES.read_text())["argocd"]["healthCheck"] == HEALTH_LUA.read_text()


def _docs_section() -> str:
    text = DOCS.read_text()
    start = text.index("\n## Argo CD\n")
    end = text.find("\n## ", start + 1)
    return text[start:] if end < 0 else text[start:end]


def _documented(command: str) -> list[str]:
    """The arguments of the one documented shell command that starts with `command`."""
    lines = [line.strip().removeprefix("$ ") for line in _docs_section().splitlines()]
    (found,) = [line for line in lines if line.startswith(command)]
    return shlex.split(found)


def test_the_docs_name_the_key_every_status_and_files_that_exist() -> None:
    section = _docs_section()
    assert CM_KEY in section and "to be written" not in section
    assert "argocd admin settings resource-overrides health" in section
    for status in STATUSES:
        assert f"**{status}**" in section, status
    for link in re.findall(r"\]\(\.\./([^)#]+)", section):
        assert (REPO / link).exists(), link
    assert _documented("kubectl -n argocd patch configmap argocd-cm")[-1] == str(CM_PATCH.relative_to(REPO))


def test_the_documented_helm_commands_hand_argo_cd_the_same_text(helm: Helm, tmp_path: pathlib.Path) -> None:
    """`helm show values --jsonpath` from our chart, then `--set-file` into a stand-in for the
    argo-cd chart that renders `configs.cm` into argocd-cm as the real one does."""
    show = _documented("helm show values")
    assert show[3] == "charts/swiftdiffusion"
    extracted = helm.run("show", "values", str(CHART), *show[4:show.index(">")]).stdout
    assert extracted == HEALTH_LUA.read_text()

    stand_in = tmp_path / "argo-cd"
    (stand_in / "templates").mkdir(parents=True)
    (stand_in / "Chart.yaml").write_text("apiVersion: v2\nname: argo-cd\nversion: 0.0.1\n")
    (stand_in / "templates" / "argocd-cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: argocd-cm\ndata:\n"
        "{{- toYaml .Values.configs.cm | nindent 2 }}\n")
    upgrade = _documented("helm upgrade argocd")
    key, file = upgrade[upgrade.index("--set-file") + 1].split("=", 1)
    (tmp_path / file).write_text(extracted)
    out = helm.run("template", "argocd", str(stand_in), "--set-file", f"{key}={tmp_path / file}").stdout
    (cm,) = by_kind([d for d in yaml.safe_load_all(out) if d], "ConfigMap")
    assert cm["data"] == {CM_KEY: HEALTH_LUA.read_text()}


def test_the_chart_creates_no_argocd_cm(helm: Helm) -> None:
    names = [o["metadata"]["name"] for o in by_kind(helm.template(), "ConfigMap")]
    assert "argocd-cm" not in names
    result = helm.run("template", "swd", str(CHART), "--set", "argocd.enabled=true", check=False)
    assert "values don't meet the specifications of the schema" in result.stderr
