"""Kubeconfig files for the test bed's clients (JSON, which every YAML loader reads)."""
from __future__ import annotations

import json
from pathlib import Path

CONTEXT = "swiftdiffusion-testbed"


def write_kubeconfig(path: Path, server: str, pki: Path, identity: str) -> Path:
    """A kubeconfig authenticating as the client cert `<pki>/<identity>.crt`."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": CONTEXT, "cluster": {"server": server, "certificate-authority": str(pki / "ca.crt")}}],
        "users": [
            {
                "name": identity,
                "user": {
                    "client-certificate": str(pki / f"{identity}.crt"),
                    "client-key": str(pki / f"{identity}.key"),
                },
            }
        ],
        "contexts": [{"name": CONTEXT, "context": {"cluster": CONTEXT, "user": identity}}],
        "current-context": CONTEXT,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config, indent=2) + "\n")
    return path
