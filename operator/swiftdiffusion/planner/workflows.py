"""T2IWorkflow YAML files, as `kubectl apply` takes them, into the operator's typed model.

The planner applies them in file order: each gets a creation time one second after the
previous, so a shared ControlNet pool's leader is the first member listed, as it would be
if they were applied in that order. What the CRD's OpenAPI schema refuses is refused here
through the same typed model (CEL rules are the API server's and are not re-checked).
"""
from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml
from pydantic import ValidationError

from swiftdiffusion.operator import model as m

NAMESPACE = "default"
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


class WorkflowError(ValueError):
    """A workflow file the planner (and the CRD) would refuse."""


def _documents(path: Path) -> list[dict]:
    try:
        return [d for d in yaml.safe_load_all(path.read_text()) if d]
    except yaml.YAMLError as e:
        raise WorkflowError(f"{path}: {e}") from None


def load(paths: Sequence[Path]) -> list[m.Workflow]:
    workflows: list[m.Workflow] = []
    for path in paths:
        for doc in _documents(path):
            if doc.get("kind") != m.KIND:
                raise WorkflowError(f"{path}: kind {doc.get('kind')!r} is not {m.KIND}")
            meta = doc.get("metadata") or {}
            name = meta.get("name")
            created = (EPOCH + timedelta(seconds=len(workflows))).strftime("%Y-%m-%dT%H:%M:%SZ")
            body = {**doc, "metadata": {"namespace": NAMESPACE, **meta, "uid": f"planner-{name}",
                                        "creationTimestamp": created}}
            try:
                wf = m.Workflow.from_body(body)
            except (KeyError, ValidationError) as e:
                raise WorkflowError(f"{path}: workflow {name!r}: {_field_errors(e)}") from None
            if any(w.name == wf.name for w in workflows):
                raise WorkflowError(f"{path}: workflow {wf.name!r} is defined twice")
            workflows.append(wf)
    return workflows


def _field_errors(e: Exception) -> str:
    if isinstance(e, ValidationError):
        return "; ".join(f"spec.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors())
    return f"metadata.{e.args[0]} is required"
