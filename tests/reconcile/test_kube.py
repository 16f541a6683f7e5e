"""Server-side apply bodies survive the API server's YAML decoder for any text a workflow admits."""
from __future__ import annotations

import json

import pytest
import yaml

from swiftdiffusion.operator.kube import apply_patch_body


@pytest.mark.parametrize("text", ["plain", "emoji \U0001f600 model", "\\ud83d is text", "\\\U0001f600", "\x08\x7f\x85é",
                                  "\U0010ffff\U00010000"])
def test_apply_body_reads_back_as_the_same_manifest_in_yaml(text: str) -> None:
    manifest = {"metadata": {"annotations": {"a": text}}, "data": {text: [text]}}
    body = apply_patch_body(manifest)
    assert yaml.safe_load(body) == manifest
    assert "\\ud8" not in body.replace("\\\\ud8", ""), "no surrogate-pair escapes left for YAML to refuse"


def test_apply_body_is_plain_json_for_basic_text() -> None:
    manifest = {"kind": "ConfigMap", "data": {"config.yaml": "role: base\n"}}
    assert json.loads(apply_patch_body(manifest)) == manifest
