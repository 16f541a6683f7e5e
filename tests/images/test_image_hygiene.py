"""What users check in an image before they run it: its labels, its user, what it leaves out."""
from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from tests.images.podman import inspect_image, podman

VERSION = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["project"]["version"]
# Measured with the offline bookworm base (225 MB): 391 MB and 5.66 GB; a budget, not a pin.
SIZE_LIMITS = {"operator": 450e6, "runtime": 6.5e9}


def shell(image: str, script: str) -> str:
    return podman("run", "--rm", "--network", "none", "--entrypoint", "sh", image, "-c", script).stdout


@pytest.mark.parametrize("name", ["operator", "runtime"])
def test_image_is_labelled_non_root_and_without_build_leftovers(name: str, images: dict[str, str]) -> None:
    info = inspect_image(images[name])
    config, labels = info["Config"], info["Config"]["Labels"]
    assert labels["org.opencontainers.image.version"] == VERSION
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert labels["org.opencontainers.image.source"].startswith("https://github.com/")
    assert config["User"] == "10001:10001"
    assert "Healthcheck" not in config  # Kubernetes probes check health
    assert info["Size"] < SIZE_LIMITS[name], f"{name}: {info['Size'] / 1e6:.0f} MB"
    leftovers = shell(images[name], "ls -d /wheels /root/.cache /opt/swiftdiffusion/bin/pip* 2>/dev/null; "
                                    "find /opt /tmp -name '*.whl'; command -v gcc cc make; true")
    assert leftovers == ""
    print(f"{name}: {info['Size'] / 1e6:.0f} MB")


def test_operator_image_has_no_torch_and_runtime_image_has_the_pinned_one(images: dict[str, str]) -> None:
    probe = "python3 -c 'import importlib.util as u; print(u.find_spec(\"torch\") is not None)'"
    assert shell(images["operator"], probe).strip() == "False"
    pinned = next(r for r in tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
                  ["project"]["optional-dependencies"]["runtime"] if r.startswith("torch=="))
    version = shell(images["runtime"], "python3 -c 'import torch; print(torch.__version__)'").strip()
    assert version.split("+")[0] == pinned.removeprefix("torch==")
