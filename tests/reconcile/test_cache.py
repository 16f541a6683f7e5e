"""The child cache never goes back in time and never resurrects a deleted child."""
from __future__ import annotations

from swiftdiffusion.operator.cache import ChildCache


def _body(rv: str, image: str = "a") -> dict:
    return {"metadata": {"namespace": "ns", "name": "x", "resourceVersion": rv, "managedFields": [{}]},
            "spec": {"image": image}}


def test_newer_revision_wins_and_managed_fields_are_not_kept() -> None:
    cache = ChildCache()
    cache.put("Deployment", _body("10", "new"))
    cache.put("Deployment", _body("9", "old"))  # a late watch event
    held = cache.get("Deployment", "ns", "x")
    assert held["spec"]["image"] == "new" and "managedFields" not in held["metadata"]
    assert cache.get("Service", "ns", "x") is None


def test_deletion_is_a_miss_and_an_older_body_cannot_resurrect_it() -> None:
    cache = ChildCache()
    cache.put("Deployment", _body("10"))
    cache.drop("Deployment", _body("12"))
    cache.put("Deployment", _body("11"))  # the response of an apply that raced the delete
    assert cache.get("Deployment", "ns", "x") is None
    cache.put("Deployment", _body("13", "recreated"))
    assert cache.get("Deployment", "ns", "x")["spec"]["image"] == "recreated"
