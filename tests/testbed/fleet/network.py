"""The fleet's addresses: pods and Services get cluster-like, non-loopback IPs that are
local to this machine, so every pod binds its rendered ports unchanged.

The kernel treats a whole prefix as local with one route (`ip route replace local
<prefix> dev lo`): any address in it can be bound and reached over loopback, without an
interface per pod. Loopback addresses proper (127/8) cannot be used: the API server
refuses them in EndpointSlices.
"""
from __future__ import annotations

import ipaddress
import random
import subprocess
from dataclasses import dataclass

POD_PREFIX = "10.250.0.0/16"
SERVICE_PREFIX = "10.251.0.0/16"
CLUSTER_DOMAIN = "cluster.local"
# The top addresses of the pod range, never given to a pod: the fleet's add-ons run as host
# processes but need a pod-network address (an aggregated API's endpoint may not be loopback).
ADDONS = ("prometheus", "keda-adapter", "keda-operator")
PROMETHEUS_PORT = 9090


@dataclass(frozen=True)
class FleetNetwork:
    """One fleet's /24s, picked at random so two fleets on one machine rarely meet."""

    index: int

    @classmethod
    def pick(cls) -> FleetNetwork:
        return cls(random.randrange(1, 255))

    @property
    def pod_cidr(self) -> str:
        return f"10.250.{self.index}.0/24"

    @property
    def service_cidr(self) -> str:
        return f"10.251.{self.index}.0/24"

    @property
    def apiserver_service_ip(self) -> str:
        return f"10.251.{self.index}.1"

    @property
    def dns_ip(self) -> str:
        """Where CoreDNS listens: the conventional `kube-dns` address of the service range."""
        return f"10.251.{self.index}.10"

    def pod_ip(self, ordinal: int) -> str:
        hosts = list(ipaddress.ip_network(self.pod_cidr).hosts())[:-len(ADDONS)]
        return str(hosts[ordinal % len(hosts)])

    def addon_ip(self, addon: str) -> str:
        """The address of one of `ADDONS`: .254 down."""
        return str(list(ipaddress.ip_network(self.pod_cidr).hosts())[-1 - ADDONS.index(addon)])

    @property
    def prometheus_address(self) -> str:
        """Where the fleet's Prometheus listens (prometheus.py): pods and this machine reach it."""
        return f"{self.addon_ip('prometheus')}:{PROMETHEUS_PORT}"


def resolv_conf(network: FleetNetwork, namespace: str) -> str:
    """What a kubelet writes for a ClusterFirst pod: cluster DNS, namespace-first search."""
    search = f"{namespace}.svc.{CLUSTER_DOMAIN} svc.{CLUSTER_DOMAIN} {CLUSTER_DOMAIN}"
    return f"nameserver {network.dns_ip}\nsearch {search}\noptions ndots:5\n"


def ensure_local_routes() -> None:
    """Makes the pod and Service prefixes local (idempotent; needs CAP_NET_ADMIN).

    The routes stay after the fleet stops, since another fleet may use them; they only
    make otherwise unrouted private addresses answer on this machine.
    """
    for prefix in (POD_PREFIX, SERVICE_PREFIX):
        done = subprocess.run(["ip", "route", "replace", "local", prefix, "dev", "lo"],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"the fleet needs root to route {prefix} locally: {done.stderr.strip()}")
