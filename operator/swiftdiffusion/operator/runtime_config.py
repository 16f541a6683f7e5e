"""The runtime's config.yaml for each pool: objects of the runtime's own config model
(`swiftdiffusion.runtime.config`), so operator and runtime cannot drift apart."""
from __future__ import annotations

import hashlib
from collections.abc import Sequence

from swiftdiffusion.operator.model import (
    ControlNetSpec,
    LatentParallelism,
    LoraSpec,
    ModelStore,
    ModelStoreType,
    Workflow,
)
from swiftdiffusion.runtime.config import (
    CONFIG_DIR,
    CONFIG_FILE,
    GRPC_PORT,
    METRICS_PORT,
    SHUTDOWN_GRACE_SECONDS,
    BaseSection,
    ControlNetEntry,
    ControlNetSection,
    Defaults,
    LoraEntry,
    RuntimeConfig,
    dump_config,
)

__all__ = ["CONFIG_DIR", "CONFIG_FILE", "GRPC_PORT", "METRICS_PORT", "SHUTDOWN_GRACE_SECONDS", "base_config",
           "controlnet_config", "digest", "model_downloads", "to_yaml"]


def model_downloads(store: ModelStore) -> bool:
    """A writable volume lets a missing model download into it on first start; a store in the
    image or on a read-only volume is offline (the runtime refuses to start without its models)."""
    return store.type is not ModelStoreType.IMAGE and not store.read_only


def _common(wf: Workflow) -> dict:
    return {"grpc_port": GRPC_PORT, "metrics_port": METRICS_PORT, "shutdown_grace_seconds": SHUTDOWN_GRACE_SECONDS,
            "model_store": wf.spec.model_store.path, "model_downloads": model_downloads(wf.spec.model_store),
            "max_width": wf.spec.serving.max_width, "max_height": wf.spec.serving.max_height}


def _controlnet(cn: ControlNetSpec) -> ControlNetEntry:
    return ControlNetEntry(name=cn.name, model=cn.model, conditioning_scale=cn.conditioning_scale)


def _lora(lora: LoraSpec) -> LoraEntry:
    return LoraEntry(name=lora.name, source=lora.source, scale=lora.scale, k=lora.k)


def base_config(wf: Workflow, controlnet_endpoint: str | None) -> RuntimeConfig:
    spec = wf.spec
    base = BaseSection(
        model=spec.base.model,
        revision=spec.base.revision,
        dtype=spec.base.dtype,
        defaults=Defaults.model_validate(spec.base.defaults.model_dump()),
        controlnet_service=controlnet_endpoint,
        controlnet_mode=spec.serving.controlnet_mode,
        latent_parallelism=spec.serving.latent_parallelism is LatentParallelism.ENABLED,
        bal_default_k=spec.serving.bal_default_k,
        loras=[_lora(lora) for lora in spec.loras],
    )
    return RuntimeConfig(role="base", base=base, controlnets=[_controlnet(cn) for cn in spec.controlnets],
                         **_common(wf))


def controlnet_config(settings_from: Workflow, controlnets: Sequence[ControlNetSpec]) -> RuntimeConfig:
    """A ControlNet pool serving `controlnets`, configured by the workflow that owns its settings;
    the ControlNets run in that workflow's base dtype (the residuals are added to its UNet's)."""
    spec = settings_from.spec
    return RuntimeConfig(
        role="controlnet",
        controlnets=[_controlnet(cn) for cn in controlnets],
        controlnet=ControlNetSection(cache_bytes=spec.controlnet_pool.cache_bytes, dtype=spec.base.dtype),
        **_common(settings_from),
    )


def to_yaml(config: RuntimeConfig) -> str:
    return dump_config(config)


def digest(text: str) -> str:
    """Short content hash, stamped on pod templates so a config change rolls the pool."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]
