"""The test bed's certificates and keys, made with the openssl command line.

One cluster CA signs the apiserver's serving cert and every client cert (identity is
the cert's CN, groups its O); a separate front-proxy CA backs the aggregation layer's
request-header authentication, as in a kubeadm cluster. EC P-256 keys keep it fast.
"""
from __future__ import annotations

import contextlib
import secrets
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

SERVICE_IP = "10.0.0.1"  # first address of the service range the apiserver is given
APISERVER_NAMES = (
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)
_MINIMAL_CONFIG = "[req]\ndistinguished_name = dn\n[dn]\n"


@dataclass(frozen=True)
class ClientIdentity:
    """A client cert's subject: file stem, user name (CN), groups (O)."""

    name: str
    user: str
    groups: tuple[str, ...] = ()


CLIENTS = (
    ClientIdentity("admin", "swiftdiffusion-admin", ("system:masters",)),
    ClientIdentity("kube-controller-manager", "system:kube-controller-manager"),
    ClientIdentity("kube-scheduler", "system:kube-scheduler"),
    ClientIdentity("kwok", "kwok-controller", ("system:masters",)),
    ClientIdentity("coredns", "system:coredns"),  # read-only, bound by tests/testbed/dns.py
    ClientIdentity("apiserver-kubelet-client", "kube-apiserver-kubelet-client", ("system:masters",)),
    # The fleet's KEDA, as the ServiceAccount its own RBAC manifests bind (tests/testbed/fleet/keda.py).
    ClientIdentity("keda-operator", "system:serviceaccount:keda:keda-operator",
                   ("system:serviceaccounts", "system:serviceaccounts:keda")),
    ClientIdentity("prometheus", "system:prometheus"),  # pod discovery, bound by tests/testbed/fleet/prometheus.py
)


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


def _subject(common_name: str, groups: tuple[str, ...] = ()) -> str:
    return "".join(f"/O={group}" for group in groups) + f"/CN={common_name}"


def _make_ca(pki: Path, name: str, config: Path) -> None:
    _openssl(
        "req", "-x509", "-new", "-nodes", "-config", config,
        "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-keyout", pki / f"{name}.key", "-out", pki / f"{name}.crt",
        "-days", "3650", "-subj", _subject(f"swiftdiffusion-testbed-{name}"),
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
    )


def _make_leaf(pki: Path, ca: str, name: str, subject: str, extensions: str, config: Path) -> None:
    csr = pki / f"{name}.csr"
    _openssl(
        "req", "-new", "-nodes", "-config", config,
        "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-keyout", pki / f"{name}.key", "-out", csr, "-subj", subject,
    )
    extfile = pki / f"{name}.ext"
    extfile.write_text("basicConstraints = critical,CA:FALSE\nkeyUsage = critical,digitalSignature\n" + extensions)
    _openssl(
        "x509", "-req", "-in", csr, "-CA", pki / f"{ca}.crt", "-CAkey", pki / f"{ca}.key",
        "-set_serial", f"0x{secrets.token_hex(16)}", "-days", "3650",
        "-out", pki / f"{name}.crt", "-extfile", extfile,
    )
    csr.unlink()
    extfile.unlink()


@contextlib.contextmanager
def _openssl_config(pki: Path) -> Iterator[Path]:
    pki.mkdir(parents=True, exist_ok=True)
    config = pki / "openssl.cnf"
    config.write_text(_MINIMAL_CONFIG)
    try:
        yield config
    finally:
        config.unlink()


def make_mutual_tls(pki: Path, name: str, dns_names: Sequence[str]) -> None:
    """A CA `<name>-ca` and the one cert `<name>` it signs for both ends of a mutual-TLS
    link (server and client auth, SANs `dns_names`), as KEDA's own cert rotation makes
    for its operator, metrics adapter and webhooks."""
    with _openssl_config(pki) as config:
        _make_ca(pki, f"{name}-ca", config)
        names = ",".join(f"DNS:{dns}" for dns in dns_names)
        _make_leaf(pki, f"{name}-ca", name, _subject(name),
                   f"extendedKeyUsage = serverAuth,clientAuth\nsubjectAltName = {names}\n", config)


def make_pki(pki: Path, service_ip: str = SERVICE_IP) -> None:
    """Writes every cert and key the control plane needs into `pki`; `service_ip` is the
    apiserver's address in the service range (a SAN of its serving cert)."""
    with _openssl_config(pki) as config:
        _make_ca(pki, "ca", config)
        _make_ca(pki, "front-proxy-ca", config)
        names = ",".join([f"DNS:{name}" for name in APISERVER_NAMES] + ["IP:127.0.0.1", f"IP:{service_ip}"])
        _make_leaf(
            pki, "ca", "apiserver", _subject("kube-apiserver"),
            f"extendedKeyUsage = serverAuth\nsubjectAltName = {names}\n", config,
        )
        for client in CLIENTS:
            _make_leaf(
                pki, "ca", client.name, _subject(client.user, client.groups),
                "extendedKeyUsage = clientAuth\n", config,
            )
        _make_leaf(
            pki, "front-proxy-ca", "front-proxy-client", _subject("front-proxy-client"),
            "extendedKeyUsage = clientAuth\n", config,
        )
        _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", pki / "sa.key")
        _openssl("pkey", "-in", pki / "sa.key", "-pubout", "-out", pki / "sa.pub")
