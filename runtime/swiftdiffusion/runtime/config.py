"""The runtime's config file (docs/architecture.md): YAML with camelCase keys."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel


class _Camel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True)


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
    dtype: Literal["float16", "bfloat16", "float32"] = "float16"
    defaults: Defaults = Defaults()
    controlnet_service: str | None = None
    controlnet_mode: Literal["synchronous", "pipelined"] = "synchronous"
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
    dtype: Literal["float16", "bfloat16", "float32"] = "float16"  # extension


class RuntimeConfig(_Camel):
    role: Literal["base", "controlnet"]
    grpc_port: int = 50051
    metrics_port: int = 9400
    model_store: str | None = None
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
    grpc_workers: int = 16
    bind_address: str = "[::]"

    def require_base(self) -> BaseSection:
        if self.base is None:
            raise ValueError("role base needs a `base:` section")
        return self.base


def load_config(path: Path | str) -> RuntimeConfig:
    return RuntimeConfig.model_validate(yaml.safe_load(Path(path).read_text()) or {})


def dump_config(config: RuntimeConfig) -> str:
    return yaml.safe_dump(config.model_dump(by_alias=True, exclude_none=True), sort_keys=False)
