"""BAL for a base server: its LoRA store and step-hook factory, built from config.yaml."""
from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry

from swiftdiffusion.runtime.config import RuntimeConfig
from swiftdiffusion.runtime.lora.bal import BalHookFactory
from swiftdiffusion.runtime.lora.metrics import LoraMetrics
from swiftdiffusion.runtime.lora.store import LoraEntry, LoraStore
from swiftdiffusion.runtime.pipeline.base_model import BaseModel


def lora_entries(config: RuntimeConfig) -> list[LoraEntry]:
    """`base.loras` from config.yaml; both CFG workers resolve a request's LoRAs from these."""
    model_store = Path(config.model_store) if config.model_store else None
    return [LoraEntry.from_config(item.model_dump(), model_store) for item in config.require_base().loras]


def bal_step_hooks(config: RuntimeConfig, model: BaseModel, registry: CollectorRegistry) -> BalHookFactory:
    """`base.loras` (and `<modelStore>/loras/<name>.safetensors`), `balDefaultK`, the base
    model's text encoders; profiled K is looked up for `base.model` at `base.revision`."""
    base = config.require_base()
    model_store = Path(config.model_store) if config.model_store else None
    store = LoraStore(lora_entries(config), model_store, metrics=LoraMetrics(registry))
    pipeline = model.pipeline
    text_encoders = {"text_encoder": pipeline.text_encoder, "text_encoder_2": pipeline.text_encoder_2}
    return BalHookFactory(store, text_encoders, base.bal_default_k, base.model, base.revision or "main")
