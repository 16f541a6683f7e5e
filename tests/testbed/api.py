"""A minimal JSON client for the apiserver, enough to probe health and register nodes
without the kubernetes package (the test bed runs on the system Python)."""
from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def collection(body: dict[str, Any]) -> str:
    """The REST path of `body`'s collection, for kinds whose plural is `<kind>s` in lower
    case (every kind the test bed installs: CRDs, RBAC, Services, EndpointSlices, APIServices)."""
    group_version = body["apiVersion"]
    root = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
    namespace = body["metadata"].get("namespace")
    scope = f"/namespaces/{namespace}" if namespace else ""
    return f"{root}{scope}/{body['kind'].lower()}s"


@dataclass(frozen=True)
class ApiClient:
    server: str
    ca: Path
    cert: Path
    key: Path

    def _context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca))
        context.load_cert_chain(str(self.cert), str(self.key))
        return context

    def request(self, method: str, path: str, body: dict[str, Any] | None = None, timeout: float = 10,
                content_type: str = "application/json") -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.server + path, data=data, method=method, headers={"Content-Type": content_type}
        )
        with urllib.request.urlopen(request, context=self._context(), timeout=timeout) as response:
            payload = response.read()
        return json.loads(payload) if payload.startswith(b"{") else payload.decode()

    def patch_status(self, path: str, status: dict[str, Any]) -> Any:
        """A strategic merge patch of `path`/status (conditions merge by type)."""
        return self.request("PATCH", f"{path}/status", {"status": status},
                            content_type="application/strategic-merge-patch+json")

    def ready(self) -> bool:
        """True when /readyz answers ok, i.e. etcd is reachable and post-start hooks ran."""
        try:
            return self.request("GET", "/readyz", timeout=3) == "ok"
        except (OSError, urllib.error.URLError, ssl.SSLError):
            return False

    def create_or_replace(self, collection: str, body: dict[str, Any]) -> None:
        """POSTs `body`; when it already exists, deletes and recreates it (nodes only have spec)."""
        try:
            self.request("POST", collection, body)
        except urllib.error.HTTPError as error:
            if error.code != 409:
                raise
            self.request("DELETE", f"{collection}/{body['metadata']['name']}")
            self.request("POST", collection, body)
