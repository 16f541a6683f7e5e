"""A few generic REST calls on the official client: get, server-side apply, status patch, events.

Manifests stay plain dicts from render.py to the wire; the typed models of the
kubernetes package would only add a conversion that can drop fields.
"""
from __future__ import annotations

import json
import re
import uuid
from typing import Any

from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from swiftdiffusion.operator import model as m
from swiftdiffusion.operator.metrics import API_WRITES
from swiftdiffusion.operator.render import FIELD_MANAGER, Manifest
from swiftdiffusion.operator.status import now as status_now

APPLY_PATCH = "application/apply-patch+yaml"
# Scanned left to right: an escaped backslash is consumed whole, so "\\ud83d" stays text.
_SURROGATE_PAIR = re.compile(r"\\\\|\\u(d[89ab][0-9a-f]{2})\\u(d[c-f][0-9a-f]{2})")
PLURALS = {"ConfigMap": "configmaps", "Service": "services", "Deployment": "deployments",
           "PodDisruptionBudget": "poddisruptionbudgets", "NetworkPolicy": "networkpolicies", m.KIND: m.PLURAL,
           "Event": "events", "ScaledObject": "scaledobjects"}


def collection_path(api_version: str, kind: str, namespace: str) -> str:
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    return f"{prefix}/namespaces/{namespace}/{PLURALS[kind]}"


def object_path(api_version: str, kind: str, namespace: str, name: str) -> str:
    return f"{collection_path(api_version, kind, namespace)}/{name}"


def apply_patch_body(manifest: Any) -> str:
    """A server-side apply body: JSON is YAML, except that YAML has no surrogate-pair escapes,
    so a character beyond the Basic Multilingual Plane (an emoji in a model id) is written
    as YAML's own 8-digit escape; json.dumps would make the API server refuse the body."""
    def astral(match: re.Match[str]) -> str:
        if match.group(1) is None:  # an escaped backslash: keep it, and what follows is text
            return match.group(0)
        high, low = int(match.group(1), 16) - 0xD800, int(match.group(2), 16) - 0xDC00
        return f"\\U{0x10000 + (high << 10) + low:08x}"

    return _SURROGATE_PAIR.sub(astral, json.dumps(manifest))


def request(api: ApiClient, method: str, path: str, *, body: Any = None,
            query: dict[str, str] | None = None, content_type: str = "application/json",
            accept: str = "application/json") -> dict[str, Any]:
    if content_type == APPLY_PATCH and body is not None and not isinstance(body, str):
        body = apply_patch_body(body)
    headers = {"Accept": accept, "Content-Type": content_type}
    serialized = api.param_serialize(method=method, resource_path=path, query_params=query,
                                     header_params=headers, body=body, auth_settings=["BearerToken"])
    response = api.call_api(*serialized)
    response.read()
    if not 200 <= response.status <= 299:
        raise ApiException.from_response(http_resp=response, body=response.data.decode(), data=None)
    return json.loads(response.data) if response.data else {}


def get(api: ApiClient, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        return request(api, "GET", object_path(api_version, kind, namespace, name))
    except ApiException as error:
        if error.status == 404:
            return None
        raise


def api_served(api: ApiClient, api_version: str) -> bool:
    """Whether the API server serves `group/version` (a CRD such as KEDA's is installed)."""
    try:
        request(api, "GET", f"/apis/{api_version}")
    except ApiException as error:
        if error.status == 404:
            return False
        raise
    return True


def list_pods(api: ApiClient, namespace: str, label_selector: str) -> list[dict[str, Any]]:
    return request(api, "GET", f"/api/v1/namespaces/{namespace}/pods", query={"labelSelector": label_selector})["items"]


def list_pod_events(api: ApiClient, namespace: str, pods: list[str]) -> list[dict[str, Any]]:
    """core/v1 Events about `pods`, in one LIST: by name for one pod; for several (a field
    selector cannot OR names) every Pod's events in the namespace, which the caller matches."""
    selector = "involvedObject.kind=Pod" + (f",involvedObject.name={pods[0]}" if len(pods) == 1 else "")
    return request(api, "GET", collection_path("v1", "Event", namespace), query={"fieldSelector": selector})["items"]


def list_workflows(api: ApiClient, namespace: str, field_selector: str = "") -> list[dict[str, Any]]:
    path = collection_path(f"{m.GROUP}/{m.VERSION}", m.KIND, namespace)
    return request(api, "GET", path, query={"fieldSelector": field_selector} if field_selector else None)["items"]


def apply(api: ApiClient, manifest: Manifest) -> dict[str, Any]:
    """Server-side apply under the operator's one field manager, taking fields back from hand edits."""
    meta = manifest["metadata"]
    path = object_path(manifest["apiVersion"], manifest["kind"], meta["namespace"], meta["name"])
    API_WRITES.labels(resource=PLURALS[manifest["kind"]]).inc()
    return request(api, "PATCH", path, body=manifest, query={"fieldManager": FIELD_MANAGER, "force": "true"},
                   content_type=APPLY_PATCH)


def delete(api: ApiClient, api_version: str, kind: str, namespace: str, name: str) -> None:
    """Deletes in the background (dependents such as ReplicaSets go with it); a 404 is fine."""
    API_WRITES.labels(resource=PLURALS[kind]).inc()
    try:
        request(api, "DELETE", object_path(api_version, kind, namespace, name),
                body={"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"})
    except ApiException as error:
        if error.status != 404:
            raise


def patch_status(api: ApiClient, namespace: str, name: str, status: dict[str, Any]) -> None:
    path = object_path(f"{m.GROUP}/{m.VERSION}", m.KIND, namespace, name) + "/status"
    API_WRITES.labels(resource=f"{m.PLURAL}/status").inc()
    request(api, "PATCH", path, body={"status": status}, content_type="application/merge-patch+json")


def post_event(api: ApiClient, workflow: dict[str, Any], *, reason: str, message: str, warning: bool = False) -> None:
    """A core/v1 Event on the workflow, as `kubectl describe` shows them."""
    meta = workflow["metadata"]
    now = status_now()
    event = {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:12]}", "namespace": meta["namespace"]},
        "involvedObject": {"apiVersion": f"{m.GROUP}/{m.VERSION}", "kind": m.KIND, "name": meta["name"],
                           "namespace": meta["namespace"], "uid": meta["uid"]},
        "reason": reason, "message": message[:1024], "type": "Warning" if warning else "Normal",
        "source": {"component": FIELD_MANAGER}, "reportingComponent": FIELD_MANAGER,
        "firstTimestamp": now, "lastTimestamp": now, "count": 1,
    }
    API_WRITES.labels(resource="events").inc()
    request(api, "POST", collection_path("v1", "Event", meta["namespace"]), body=event)
