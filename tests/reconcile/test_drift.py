"""When is a live object still what we applied? Decides whether a reconcile writes at all."""
from __future__ import annotations

import copy

from swiftdiffusion.operator.drift import contains
from swiftdiffusion.operator.render import render_workflow
from tests.reconcile.workflows import workflow


def _as_served(manifest: dict) -> dict:
    """What the API server returns: defaults added, empty fields dropped, quantities canonical."""
    live = copy.deepcopy(manifest)
    live["metadata"].update(uid="x", resourceVersion="7", managedFields=[{"manager": "kubectl"}])
    if live["kind"] == "Deployment":
        pod = live["spec"]["template"]["spec"]
        pod.update(restartPolicy="Always", dnsPolicy="ClusterFirst")
        container = pod["containers"][0]
        container["resources"].pop("requests")
        container["terminationMessagePath"] = "/dev/termination-log"
        container["readinessProbe"].update(timeoutSeconds=1, successThreshold=1)
        live["status"] = {"replicas": 1}
    return live


def test_served_object_with_defaults_contains_what_we_applied() -> None:
    for manifest in render_workflow(workflow(basePool={"resources": {"requests": {"cpu": "0.5"}}})):
        live = _as_served(manifest)
        if manifest["kind"] == "Deployment":
            live["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"] = {"cpu": "500m"}
        assert contains(manifest, live), manifest["kind"]


def test_hand_edit_of_an_owned_field_is_drift() -> None:
    deployment = next(x for x in render_workflow(workflow()) if x["kind"] == "Deployment")
    live = _as_served(deployment)
    live["spec"]["template"]["spec"]["containers"][0]["image"] = "evil:latest"
    assert not contains(deployment, live)
    live = _as_served(deployment)
    del live["metadata"]["labels"]["swiftdiffusion.io/pool"]
    assert not contains(deployment, live)


def test_fields_we_do_not_set_are_not_drift() -> None:
    deployment = next(x for x in render_workflow(workflow(basePool={"autoscaling": {"enabled": True}}))
                      if x["kind"] == "Deployment")
    live = _as_served(deployment)
    live["spec"]["replicas"] = 7  # the autoscaler's
    live["metadata"]["labels"]["team"] = "imaging"
    live["spec"]["template"]["spec"]["containers"].append({"name": "sidecar", "image": "s"})
    assert contains(deployment, live)


def test_lists_by_name_match_regardless_of_extra_items_but_positional_lists_must_be_equal() -> None:
    assert contains({"env": [{"name": "A", "value": "1"}]}, {"env": [{"name": "B"}, {"name": "A", "value": "1"}]})
    assert not contains({"args": ["a", "b"]}, {"args": ["a", "b", "c"]})
    assert not contains({"n": 1}, {"n": "1"})
    assert contains({"flag": False, "empty": {}, "none": []}, {})
