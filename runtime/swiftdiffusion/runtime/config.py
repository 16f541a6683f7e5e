"""The runtime's config file (docs/architecture.md): YAML with camelCase keys.

The contract between the operator and the runtime, defined once: the operator renders
pools' ConfigMaps as objects of this model and the runtime loads them with it. Torch-free,
so the operator imports it without the runtime extra. A key the model does not know is
refused at start, naming it: a typo must not silently fall back to a default.
"""
from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

GRPC_PORT = 50051
METRICS_PORT = 9400
CONFIG_DIR = "/etc/swiftdiffusion"
CONFIG_FILE = "config.yaml"
SHUTDOWN_GRACE_SECONDS = 45.0


class Dtype(StrEnum):
    FLOAT16 = "float16"
    BFLOAT16 = "bfloat16"
    FLOAT32 = "float32"


class ControlNetMode(StrEnum):
    """Synchronous: step t waits for its own residuals (diffusers' output). Pipelined: step t
    uses step t-1's, hiding the transfer."""

    SYNCHRONOUS = "synchronous"
    PIPELINED = "pipelined"


class _Camel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True,
                              use_enum_values=True, validate_default=True)


class Defaults(_Camel):
    steps: int = 30
    guidance_scale: float = 5.0
    width: int = 1024
    height: int = 1024


class LoraEntry(_Camel):
    name: str
    source: str
    scale: float = 1.0
    k: int | None = None


class BaseSection(_Camel):
    model: str
    revision: str | None = None
    dtype: Dtype = Dtype.FLOAT16
    defaults: Defaults = Defaults()
    controlnet_service: str | None = None
    controlnet_mode: ControlNetMode = ControlNetMode.SYNCHRONOUS
    latent_parallelism: bool = False
    bal_default_k: int = 10
    loras: list[LoraEntry] = []
    # Extensions beyond the contract (all optional):
    residual_wire_dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    request_timeout_seconds: float = 600.0


class ControlNetEntry(_Camel):
    name: str
    model: str | None = None
    conditioning_scale: float = 1.0


class ControlNetSection(_Camel):
    cache_bytes: int = 32 << 30
    dtype: Dtype = Dtype.FLOAT16


class RuntimeConfig(_Camel):
    role: Literal["base", "controlnet"]
    grpc_port: int = GRPC_PORT
    metrics_port: int = METRICS_PORT
    model_store: str | None = None
    # Off: every model must already be in the store (an image layer, a read-only volume) and the
    # runtime never touches the network. On: a model missing from the store is downloaded into
    # it on first start (a writable PVC); see serving/model_store.py.
    model_downloads: bool = False
    max_width: int = 2048
    max_height: int = 2048
    base: BaseSection | None = None
    controlnets: list[ControlNetEntry] = []
    controlnet: ControlNetSection = ControlNetSection()
    # Extensions beyond the contract (all optional):
    max_steps: int = 200
    max_guidance_scale: float = 30.0
    device: str = "auto"
    torch_threads: int | None = Field(default=None, ge=1)
    cpu_affinity: list[int] | None = None
    # Server threads: requests past grpc_workers - 2 are refused (UNAVAILABLE), so health
    # checks always find a thread and every accepted request is in the queue metric.
    grpc_workers: int = Field(default=64, ge=3)
    bind_address: str = "[::]"
    # On SIGTERM: report NOT_SERVING, refuse new requests, let those in flight finish for
    # this long (the pod's grace period leaves room for it after the preStop delay).
    shutdown_grace_seconds: float = Field(default=SHUTDOWN_GRACE_SECONDS, ge=0)

    def require_base(self) -> BaseSection:
        if self.base is None:
            raise ValueError("role base needs a `base:` section")
        return self.base


# Overrides `bindAddress` for one process: a pod that should listen on its own IP only
# sets it from the downward API (`status.podIP`); the test bed's kubelet stand-in, whose
# pods share one network namespace, sets it to each pod's address.
BIND_ADDRESS_ENV = "SWIFTDIFFUSION_BIND_ADDRESS"


class ConfigError(ValueError):
    """A config file the runtime refuses, with every offending key named."""


def load_config(path: Path | str) -> RuntimeConfig:
    try:
        return RuntimeConfig.model_validate(yaml.safe_load(Path(path).read_text()) or {})
    except OSError as error:  # a ConfigMap not mounted where the command says: name the path
        raise ConfigError(f"config {path}: {error.strerror.lower()}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"config {path}: not YAML: {' '.join(str(error).split())}") from None
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(top level)'}: {e['msg']}" for e in error.errors())
        raise ConfigError(f"config {path}: {problems}") from None


def dump_config(config: RuntimeConfig) -> str:
    return yaml.safe_dump(config.model_dump(by_alias=True, exclude_none=True), sort_keys=False)
