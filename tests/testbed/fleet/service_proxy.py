"""A kube-proxy stand-in for ClusterIP Services, in the manner of its old userspace mode.

For every TCP port of every Service with a cluster IP it listens on `clusterIP:port`
(the Service prefix is local, see network.py) and relays each accepted connection to one
ready endpoint from the Service's EndpointSlices, round-robin per connection, as
kube-proxy balances connections, not requests. With no ready endpoint the connection is
closed at once, as kube-proxy rejects it. Headless Services need none of this: DNS
returns their pods.
"""
from __future__ import annotations

import asyncio
import contextlib
import itertools
import urllib.error
from dataclasses import dataclass, field
from typing import Any

from tests.testbed.api import ApiClient

SYNC_SECONDS = 0.5


def backends(slices: list[dict[str, Any]], port: dict[str, Any]) -> list[tuple[str, int]]:
    """Ready endpoints of one Service port in its EndpointSlices, in a stable order."""
    found = set()
    for endpoint_slice in slices:
        for slice_port in endpoint_slice.get("ports") or []:
            if slice_port.get("name", "") != port.get("name", "") or slice_port.get("protocol", "TCP") != "TCP":
                continue
            for endpoint in endpoint_slice.get("endpoints") or []:
                if endpoint.get("conditions", {}).get("ready") is not False:
                    found.update((address, slice_port["port"]) for address in endpoint["addresses"])
    return sorted(found)


def listeners(services: list[dict[str, Any]], slices: list[dict[str, Any]]) -> dict[tuple[str, int], list[tuple[str, int]]]:
    """(clusterIP, port) -> its ready backends, for every proxied Service port."""
    by_service: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for endpoint_slice in slices:
        owner = endpoint_slice["metadata"].get("labels", {}).get("kubernetes.io/service-name")
        if owner:
            by_service.setdefault((endpoint_slice["metadata"]["namespace"], owner), []).append(endpoint_slice)
    out = {}
    for service in services:
        ip = service["spec"].get("clusterIP")
        if not ip or ip == "None":
            continue
        key = (service["metadata"]["namespace"], service["metadata"]["name"])
        for port in service["spec"].get("ports", []):
            if port.get("protocol", "TCP") == "TCP":
                out[(ip, port["port"])] = backends(by_service.get(key, []), port)
    return out


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(ConnectionError, OSError):
            writer.close()


@dataclass
class ServiceProxy:
    api: ApiClient
    servers: dict[tuple[str, int], asyncio.Server] = field(default_factory=dict)
    targets: dict[tuple[str, int], list[tuple[str, int]]] = field(default_factory=dict)
    turns: dict[tuple[str, int], itertools.count] = field(default_factory=dict)

    async def relay(self, frontend: tuple[str, int], reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        choices = self.targets.get(frontend, [])
        if not choices:
            writer.close()
            return
        host, port = choices[next(self.turns.setdefault(frontend, itertools.count())) % len(choices)]
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(host, port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))

    async def sync(self) -> None:
        services = (await asyncio.to_thread(self.api.request, "GET", "/api/v1/services"))["items"]
        slices = (await asyncio.to_thread(self.api.request, "GET", "/apis/discovery.k8s.io/v1/endpointslices"))["items"]
        self.targets = listeners(services, slices)
        for frontend in set(self.servers) - set(self.targets):
            self.servers.pop(frontend).close()
        for frontend in set(self.targets) - set(self.servers):
            host, port = frontend
            try:
                self.servers[frontend] = await asyncio.start_server(
                    lambda r, w, at=frontend: self.relay(at, r, w), host, port, reuse_address=True)
            except OSError as error:
                print(f"service proxy: cannot listen on {host}:{port}: {error}", flush=True)

    async def run(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            try:
                await self.sync()
            except (urllib.error.URLError, OSError) as error:
                print(f"service proxy: API server: {error}", flush=True)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stopping.wait(), SYNC_SECONDS)
        for server in self.servers.values():
            server.close()
