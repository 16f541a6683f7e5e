"""The CRD is generated from one source, and that source agrees with the operator's model."""
from __future__ import annotations

import pathlib
import typing

import pydantic
import pytest
import yaml

from swiftdiffusion.operator import crd, generate, rbac
from swiftdiffusion.operator import model as m

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("relative", sorted(generate.artifacts()))
def test_checked_in_manifest_matches_its_generator(relative: str) -> None:
    on_disk = (REPO / relative).read_text()
    assert on_disk == generate.artifacts()[relative], f"{relative} drifted: run `make crds`"


def _model_in(annotation: typing.Any) -> type[pydantic.BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        if found := _model_in(arg):
            return found
    return None


def _assert_agree(model: type[pydantic.BaseModel], schema: dict, path: str) -> int:
    """Same field names at every level, and the same scalar defaults; returns fields checked."""
    props = schema["properties"]
    fields = {info.alias or name: info for name, info in model.model_fields.items()}
    assert set(fields) == set(props), f"{path}: model {sorted(fields)} vs schema {sorted(props)}"
    checked = 0
    for alias, info in fields.items():
        sub = props[alias]
        if not info.is_required() and "default" in sub and not isinstance(sub["default"], dict):
            default = info.default
            if isinstance(default, tuple):
                assert [getattr(d, "value", d) for d in default] == sub["default"], f"{path}.{alias}"
            else:
                assert default == sub["default"], f"{path}.{alias}: {default!r} vs {sub['default']!r}"
        if nested := _model_in(info.annotation):
            checked += _assert_agree(nested, sub.get("items", sub), f"{path}.{alias}")
        checked += 1
    return checked


def test_model_and_schema_agree_on_fields_and_defaults() -> None:
    schema = crd.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert _assert_agree(m.WorkflowSpec, schema, "spec") > 50


def test_schema_defaults_fill_a_minimal_workflow_like_the_model() -> None:
    spec = m.WorkflowSpec.model_validate({"base": {"model": "x"}})
    assert spec.base_pool.gpu_products == ("NVIDIA-H800",)
    assert spec.serving.latent_parallelism is m.LatentParallelism.DISABLED


def test_crd_has_status_short_names_and_ready_column() -> None:
    spec = crd.crd()["spec"]
    version = spec["versions"][0]
    assert version["subresources"] == {"status": {}}
    assert {"t2i", "t2iwf"} <= set(spec["names"]["shortNames"])
    columns = {c["name"]: c for c in version["additionalPrinterColumns"]}
    assert columns["Ready"]["jsonPath"] == '.status.conditions[?(@.type=="Ready")].status'
    assert {"Base", "ControlNet", "Age"} <= set(columns)
    assert any(c.get("priority") == 1 for c in columns.values())


def test_every_cel_message_names_a_field() -> None:
    rules: list[dict] = []

    def walk(node: typing.Any) -> None:
        if isinstance(node, dict):
            rules.extend(node.get("x-kubernetes-validations", []))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(crd.crd())
    assert len(rules) >= 10
    for rule in rules:
        assert rule["message"].split(" ")[0].startswith(("spec.", "metadata.")), rule


def test_rbac_leaves_workflows_and_pods_read_only_and_grants_no_secrets() -> None:
    verbs = {verb for rule in rbac.RULES for verb in rule["verbs"]}
    resources = {res for rule in rbac.RULES for res in rule["resources"]}
    workflow_verbs = {v for rule in rbac.RULES if m.PLURAL in rule["resources"] for v in rule["verbs"]}
    pod_verbs = {v for rule in rbac.RULES if "pods" in rule["resources"] for v in rule["verbs"]}
    assert workflow_verbs == {"get", "list", "watch"}
    assert pod_verbs == {"list"}, "pods are only listed, to say why a pool is not ready"
    assert "*" not in verbs and not {"secrets", "*"} & resources


@pytest.mark.parametrize("example", sorted((REPO / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_examples_parse_into_the_model(example: pathlib.Path) -> None:
    docs = [d for d in yaml.safe_load_all(example.read_text()) if d]
    assert docs
    for doc in docs:
        assert doc["apiVersion"] == f"{m.GROUP}/{m.VERSION}" and doc["kind"] == m.KIND
        m.WorkflowSpec.model_validate(doc["spec"])
        assert len(doc["metadata"]["name"]) <= crd.MAX_NAME


