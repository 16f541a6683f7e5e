"""Typed view of a T2IWorkflow custom resource.

The API server has already validated and defaulted the object against the CRD schema
(crd.py), so these models mostly give the rest of the operator names and types instead
of nested dicts. Defaults repeat the schema's (a test keeps the two in step) so that
pure code and unit tests can build a workflow from a partial spec.
"""
from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from swiftdiffusion.runtime.config import ControlNetMode, Dtype

GROUP = "swiftdiffusion.io"
VERSION = "v1alpha1"
KIND = "T2IWorkflow"
PLURAL = "t2iworkflows"
DEFAULT_IMAGE = "swiftdiffusion/runtime:0.1.0"
DEFAULT_GPU_PRODUCTS = ("NVIDIA-H800",)
DEFAULT_CONTROLNET_CACHE_BYTES = 32 * 2**30

Quantity = int | str


class _Model(BaseModel):
    """camelCase on the wire, snake_case in Python, unknown fields are a schema drift bug."""

    model_config = ConfigDict(alias_generator=to_camel, validate_by_name=True, validate_by_alias=True, extra="forbid", frozen=True)


class LatentParallelism(StrEnum):
    """Enabled: the CFG branches run as two workers on two GPUs of one pod."""

    DISABLED = "Disabled"
    ENABLED = "Enabled"


class PullPolicy(StrEnum):
    ALWAYS = "Always"
    IF_NOT_PRESENT = "IfNotPresent"
    NEVER = "Never"


class ModelStoreType(StrEnum):
    IMAGE = "Image"
    PERSISTENT_VOLUME_CLAIM = "PersistentVolumeClaim"
    HOST_PATH = "HostPath"


class ModelStore(_Model):
    """Where the runtime finds weights; `path` is what the runtime sees as its model cache."""

    type: ModelStoreType = ModelStoreType.IMAGE
    path: str = "/models"
    claim_name: str | None = None
    host_path: str | None = None
    read_only: bool = True


class GenerationDefaults(_Model):
    steps: int = 30
    guidance_scale: float = 5.0
    width: int = 1024
    height: int = 1024


class BaseModelSpec(_Model):
    model: str
    revision: str = "main"
    dtype: Dtype = Dtype.FLOAT16
    defaults: GenerationDefaults = GenerationDefaults()


class ControlNetSpec(_Model):
    name: str
    model: str
    conditioning_scale: float = 1.0


class LoraSpec(_Model):
    name: str
    source: str
    scale: float = 1.0
    k: int | None = None


class Serving(_Model):
    bal_default_k: int = 10
    latent_parallelism: LatentParallelism = LatentParallelism.DISABLED
    controlnet_mode: ControlNetMode = ControlNetMode.SYNCHRONOUS
    max_width: int = 2048
    max_height: int = 2048


class Autoscaling(_Model):
    """Bounds and target for the autoscaling objects; when enabled, replicas belong to them."""

    enabled: bool = False
    min_replicas: int = 1
    max_replicas: int = 1
    target_in_flight_per_replica: int = 2
    scale_down_stabilization_seconds: int = 300


class Toleration(_Model):
    key: str | None = None
    operator: str = "Equal"
    value: str | None = None
    effect: str | None = None
    toleration_seconds: int | None = None


class Resources(_Model):
    requests: dict[str, Quantity] = {}
    limits: dict[str, Quantity] = {}


class Pool(_Model):
    replicas: int = 1
    autoscaling: Autoscaling = Autoscaling()
    gpus: int = 1
    gpu_products: Annotated[tuple[str, ...], Field(min_length=1)] = DEFAULT_GPU_PRODUCTS
    resources: Resources = Resources()
    tolerations: tuple[Toleration, ...] = ()
    pod_labels: dict[str, str] = {}
    pod_annotations: dict[str, str] = {}
    priority_class_name: str | None = None


class ControlNetPool(Pool):
    shared_pool_name: str | None = None
    cache_bytes: int = DEFAULT_CONTROLNET_CACHE_BYTES


class WorkflowSpec(_Model):
    image: str = DEFAULT_IMAGE
    image_pull_policy: PullPolicy = PullPolicy.IF_NOT_PRESENT
    model_store: ModelStore = ModelStore()
    base: BaseModelSpec
    controlnets: tuple[ControlNetSpec, ...] = ()
    loras: tuple[LoraSpec, ...] = ()
    serving: Serving = Serving()
    base_pool: Pool = Pool()
    controlnet_pool: ControlNetPool = ControlNetPool()


class Workflow(_Model):
    """The parts of a T2IWorkflow object the operator acts on."""

    name: str
    namespace: str
    uid: str
    generation: int = 1
    creation_timestamp: str = ""
    spec: WorkflowSpec

    @classmethod
    def from_body(cls, body: dict) -> Workflow:
        meta = body["metadata"]
        return cls(
            name=meta["name"],
            namespace=meta["namespace"],
            uid=meta["uid"],
            generation=meta.get("generation", 1),
            creation_timestamp=meta.get("creationTimestamp", ""),
            spec=WorkflowSpec.model_validate(body.get("spec", {})),
        )

    @property
    def shared_pool(self) -> str | None:
        """The shared ControlNet pool this workflow joins, if it has ControlNets to serve."""
        return self.spec.controlnet_pool.shared_pool_name if self.spec.controlnets else None
