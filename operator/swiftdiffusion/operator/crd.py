"""The T2IWorkflow CustomResourceDefinition: the one source of truth for crds/t2iworkflows.yaml.

Validation lives in the schema (OpenAPI types, enums, bounds, list-map keys and CEL
rules), so a bad workflow is refused by the API server with a message naming the field,
before the operator ever sees it. Defaults live here too, so `kubectl get -o yaml` shows
what will run. Every CEL rule's `fieldPath` points at the offending field.
"""
from __future__ import annotations

from typing import Any

from swiftdiffusion.operator import model as m

Schema = dict[str, Any]
DNS_LABEL = "^[a-z]([-a-z0-9]*[a-z0-9])?$"
SHARED_POOL_FIELD = ".spec.controlnetPool.sharedPoolName"
MAX_NAME = 50  # leaves room for the "swd-" prefix and pool suffixes within 63 characters
# Kubernetes' qualified name (label and annotation keys): an optional DNS-subdomain prefix
# of at most 253 characters, "/", and a name of at most 63.
QUALIFIED_NAME = (r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                  r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
PREFIX_LENGTH = r"^([^/]{1,253}/)?[^/]+$"
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$"
# Pod labels the operator sets itself and selects its pods by: a user's must not collide.
RESERVED_LABEL_PREFIX = "swiftdiffusion.io/"
RESERVED_LABELS = ("app.kubernetes.io/name", "app.kubernetes.io/component", "app.kubernetes.io/instance",
                   "app.kubernetes.io/managed-by")
POD_RESOURCES = ("cpu", "memory", "ephemeral-storage")
# What the runtime reads (runtime/lora/source.py): a .safetensors file by absolute path, by a
# path relative to the model store, as a file:/// URL or an http(s) URL (query allowed).
LORA_SOURCE = (r"^(?i)(https?://[^/?#]+/[^?#]*\\.safetensors([?#].*)?"
               r"|file:///[^?#]*\\.safetensors|[^:?#]*\\.safetensors)$")


def _string(description: str, **extra: Any) -> Schema:
    return {"type": "string", "description": description, "maxLength": 512, **extra}


def _int(description: str, **extra: Any) -> Schema:
    return {"type": "integer", "description": description, **extra}


def _number(description: str, **extra: Any) -> Schema:
    return {"type": "number", "description": description, **extra}


def _enum(description: str, enum: type, default: str) -> Schema:
    return {"type": "string", "description": description, "enum": [e.value for e in enum], "default": str(default)}


def _object(description: str, properties: dict[str, Schema], *, required: list[str] | None = None,
            rules: list[Schema] | None = None, default: bool = True) -> Schema:
    """An object; when omitted, the API server fills in its defaults (spelled out in full, because
    CEL rules are checked against the default as written)."""
    schema: Schema = {"type": "object", "description": description, "properties": properties}
    if required:
        schema["required"] = required
    if rules:
        schema["x-kubernetes-validations"] = rules
    if default and not required:
        schema["default"] = {key: prop["default"] for key, prop in properties.items() if "default" in prop}
    return schema


def _map_list(description: str, item: Schema, max_items: int) -> Schema:
    """A list keyed by `name`: the API server itself refuses duplicate names."""
    return {
        "type": "array", "description": description, "items": item, "default": [], "maxItems": max_items,
        "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
    }


def _rule(rule: str, message: str, field_path: str | None = None) -> Schema:
    out: Schema = {"rule": rule, "message": message}
    if field_path:
        out["fieldPath"] = field_path
    return out


def _keys_rules(path: str) -> list[Schema]:
    return [
        _rule(f"self.all(k, k.matches('{QUALIFIED_NAME}') && k.matches('{PREFIX_LENGTH}'))",
              f"{path} keys must be qualified names: an optional DNS subdomain prefix of at most 253 "
              "characters and '/', then at most 63 alphanumerics, '-', '_' or '.', starting and ending "
              "alphanumeric"),
    ]


def _label_map(description: str, path: str) -> Schema:
    reserved = ", ".join(f"'{key}'" for key in RESERVED_LABELS)
    return {"type": "object", "description": description, "default": {}, "maxProperties": 64,
            "additionalProperties": {"type": "string", "maxLength": 63, "pattern": LABEL_VALUE},
            "x-kubernetes-validations": [*_keys_rules(path), _rule(
                f"!self.exists(k, k.startsWith('{RESERVED_LABEL_PREFIX}') || k in [{reserved}])",
                f"{path} must not set the labels the operator selects its pods by "
                f"({RESERVED_LABEL_PREFIX}*, {', '.join(RESERVED_LABELS)})")]}


def _annotation_map(description: str, path: str) -> Schema:
    return {"type": "object", "description": description, "default": {}, "maxProperties": 64,
            "additionalProperties": {"type": "string", "maxLength": 1024},
            "x-kubernetes-validations": _keys_rules(path)}


def _quantities(description: str) -> Schema:
    return {"type": "object", "description": description, "default": {}, "maxProperties": len(POD_RESOURCES),
            "additionalProperties": {"anyOf": [{"type": "integer"}, {"type": "string"}],
                                     "x-kubernetes-int-or-string": True, "maxLength": 64,
                                     "pattern": r"^\+?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"}}


def _model_store() -> Schema:
    store = m.ModelStore()
    return _object(
        "Where the runtime reads model weights: an image layer, a PersistentVolumeClaim or a host path.",
        {
            "type": _enum("Image: weights are baked into the runtime image at `path`.", m.ModelStoreType, store.type),
            "path": _string("Directory the runtime uses as its model cache (mount path for volumes).",
                            default=store.path, pattern="^/.*"),
            "claimName": _string("PersistentVolumeClaim holding the models (type PersistentVolumeClaim)."),
            "hostPath": _string("Node directory holding the models (type HostPath).", pattern="^/.*"),
            "readOnly": {"type": "boolean", "description": "Mount the volume read-only.", "default": store.read_only},
        },
        rules=[
            _rule("self.type != 'PersistentVolumeClaim' || has(self.claimName)",
                  "spec.modelStore.claimName is required when type is PersistentVolumeClaim", ".claimName"),
            _rule("self.type != 'HostPath' || has(self.hostPath)",
                  "spec.modelStore.hostPath is required when type is HostPath", ".hostPath"),
            _rule("self.type == 'PersistentVolumeClaim' || !has(self.claimName)",
                  "spec.modelStore.claimName is only allowed when type is PersistentVolumeClaim", ".claimName"),
            _rule("self.type == 'HostPath' || !has(self.hostPath)",
                  "spec.modelStore.hostPath is only allowed when type is HostPath", ".hostPath"),
        ],
    )


def _base() -> Schema:
    d = m.GenerationDefaults()
    side = {"minimum": 64, "maximum": 8192}
    defaults = _object("Defaults for requests that leave these out.", {
        "steps": _int("Denoising steps.", default=d.steps, minimum=1, maximum=1000),
        "guidanceScale": _number("Classifier-free guidance scale.", default=d.guidance_scale, minimum=0),
        "width": _int("Image width in pixels, a multiple of 8.", default=d.width, multipleOf=8, **side),
        "height": _int("Image height in pixels, a multiple of 8.", default=d.height, multipleOf=8, **side),
    })
    return _object("The base diffusion model (SDXL architecture).", {
        "model": _string("Model id or path, resolved with diffusers' from_pretrained in the model store.",
                         minLength=1),
        "revision": _string("Model revision.", default=m.BaseModelSpec.model_fields["revision"].default),
        "dtype": _enum("Weight and activation dtype.", m.Dtype, m.Dtype.FLOAT16),
        "defaults": defaults,
    }, required=["model"])


def _controlnets() -> Schema:
    item = _object("A ControlNet requests may use.", {
        "name": _string("Name requests use to select this ControlNet.", maxLength=63, pattern=DNS_LABEL),
        "model": _string("Model id or path.", minLength=1),
        "conditioningScale": _number("Default conditioning scale.",
                                     default=m.ControlNetSpec.model_fields["conditioning_scale"].default, minimum=0),
    }, required=["name", "model"])
    return _map_list("ControlNets this workflow may use, served by its ControlNet pool.", item, 16)


def _loras() -> Schema:
    item = _object("A LoRA requests may use.", {
        "name": _string("Name requests use to select this LoRA.", maxLength=63, pattern=DNS_LABEL),
        "source": _string("A .safetensors file: an absolute path, a path relative to the model store, a "
                          "file:/// URL or an http(s) URL (model ids are not accepted).", minLength=1),
        "scale": _number("Default LoRA scale.", default=m.LoraSpec.model_fields["scale"].default, minimum=0),
        "k": _int("Bounded asynchronous loading: merge no later than after step k "
                  "(absent: spec.serving.balDefaultK).", minimum=0),
    }, required=["name", "source"], rules=[_rule(
        f"self.source.matches('{LORA_SOURCE}')",
        "spec.loras[].source must name a .safetensors file: an absolute path, a path relative to the model "
        "store, a file:/// URL or an http(s) URL", ".source")])
    return _map_list("LoRAs this workflow may use.", item, 64)


def _serving() -> Schema:
    s = m.Serving()
    return _object("How the base pool serves requests.", {
        "balDefaultK": _int("Default bounded-asynchronous-loading step for LoRAs without their own k.",
                            default=s.bal_default_k, minimum=0),
        "latentParallelism": _enum("Enabled: run the CFG branches on two GPUs of one pod.",
                                   m.LatentParallelism, s.latent_parallelism),
        "controlnetMode": _enum("pipelined: step t uses the residuals of step t-1 to hide transfers.",
                                m.ControlNetMode, s.controlnet_mode),
        "maxWidth": _int("Largest width a request may ask for.", default=s.max_width, multipleOf=8,
                         minimum=64, maximum=8192),
        "maxHeight": _int("Largest height a request may ask for.", default=s.max_height, multipleOf=8,
                          minimum=64, maximum=8192),
    })


def _toleration(path: str) -> Schema:
    """Kubernetes' own toleration rules, so a pod with these tolerations is never refused."""
    return _object("A toleration added to the pool's pods (the GPU taint's toleration is always added).", {
        "key": _string("Taint key (a qualified name; empty with operator Exists: every taint).", maxLength=317),
        "operator": {"type": "string", "enum": ["Exists", "Equal"], "default": "Equal",
                     "description": "Exists or Equal."},
        "value": _string("Taint value (a label value; empty with operator Exists).", maxLength=63,
                         pattern=LABEL_VALUE),
        "effect": {"type": "string", "enum": ["NoSchedule", "PreferNoSchedule", "NoExecute"],
                   "description": "Taint effect (absent: all)."},
        "tolerationSeconds": _int("How long a NoExecute taint is tolerated.", minimum=0),
    }, default=False, rules=[
        _rule(f"!has(self.key) || self.key == '' || (self.key.matches('{QUALIFIED_NAME}') "
              f"&& self.key.matches('{PREFIX_LENGTH}'))",
              f"{path}[].key must be a qualified name (like a label key)", ".key"),
        _rule("(has(self.key) && self.key != '') || self.operator == 'Exists'",
              f"{path}[].operator must be Exists when key is empty", ".operator"),
        _rule("self.operator != 'Exists' || !has(self.value) || self.value == ''",
              f"{path}[].value must be empty when operator is Exists", ".value"),
        _rule("!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
              f"{path}[].tolerationSeconds is only allowed with effect NoExecute", ".tolerationSeconds"),
    ])


def _pool(path: str, extra: dict[str, Schema]) -> Schema:
    a = m.Autoscaling()
    p = m.Pool()
    autoscaling = _object("Autoscaling bounds and target; when enabled the autoscaler owns the replica count.", {
        "enabled": {"type": "boolean", "description": "Let the autoscaler set replicas.", "default": a.enabled},
        "minReplicas": _int("Fewest replicas.", default=a.min_replicas, minimum=0),
        "maxReplicas": _int("Most replicas.", default=a.max_replicas, minimum=1),
        "targetInFlightPerReplica": _int("In-flight requests per replica the autoscaler aims at.",
                                         default=a.target_in_flight_per_replica, minimum=1),
        "scaleDownStabilizationSeconds": _int("Seconds of lower load before scaling down.",
                                              default=a.scale_down_stabilization_seconds, minimum=0),
    }, rules=[_rule("self.minReplicas <= self.maxReplicas",
                    f"{path}.autoscaling.minReplicas must not exceed maxReplicas", ".minReplicas"),
              _rule("!self.enabled || self.minReplicas >= 1",
                    f"{path}.autoscaling.minReplicas must be at least 1 when autoscaling is enabled: scale to zero "
                    "is not supported (with no replica there is no queue to measure, and a request reaching an "
                    "empty pool would fail instead of waiting); to park a pool, disable autoscaling and set "
                    "replicas: 0", ".minReplicas")])
    properties: dict[str, Schema] = {
        "replicas": _int("Replica count when autoscaling is disabled.", default=p.replicas, minimum=0),
        "autoscaling": autoscaling,
        "gpus": _int("nvidia.com/gpu per pod.", default=p.gpus, minimum=1, maximum=8),
        "gpuProducts": {"type": "array", "description": "Allowed values of the node label nvidia.com/gpu.product.",
                        "items": {"type": "string", "minLength": 1, "maxLength": 63, "pattern": LABEL_VALUE},
                        "default": list(m.DEFAULT_GPU_PRODUCTS), "minItems": 1, "maxItems": 16,
                        "x-kubernetes-list-type": "set"},
        "resources": _object("CPU, memory and ephemeral storage for the runtime container (GPUs come from "
                             "`gpus`).", {
            "requests": _quantities("Resource requests."),
            "limits": _quantities("Resource limits."),
        }, rules=[
            _rule(f"self.requests.all(k, k in {list(POD_RESOURCES)}) && self.limits.all(k, k in {list(POD_RESOURCES)})",
                  f"{path}.resources may only name {', '.join(POD_RESOURCES)} (GPUs: use {path}.gpus)"),
            _rule("self.requests.all(k, !(k in self.limits) || "
                  "quantity(string(self.requests[k])).compareTo(quantity(string(self.limits[k]))) <= 0)",
                  f"{path}.resources.requests must not exceed {path}.resources.limits", ".requests"),
        ]),
        "tolerations": {"type": "array", "description": "Extra tolerations.", "items": _toleration(f"{path}.tolerations"),
                        "default": [], "maxItems": 32},
        "podLabels": _label_map("Extra labels on the pool's pods.", f"{path}.podLabels"),
        "podAnnotations": _annotation_map("Extra annotations on the pool's pods.", f"{path}.podAnnotations"),
        "priorityClassName": _string("PriorityClass of the pool's pods.", maxLength=253),
        **extra,
    }
    return _object(f"The pool serving {path}.", properties)


def _controlnet_pool() -> Schema:
    return _pool("spec.controlnetPool", {
        "sharedPoolName": _string("Join the namespace's shared ControlNet pool of this name "
                                  "(absent: a pool dedicated to this workflow).",
                                  maxLength=MAX_NAME, pattern=DNS_LABEL),
        "cacheBytes": _int("Device-memory budget for resident ControlNet models (LRU).",
                           default=m.DEFAULT_CONTROLNET_CACHE_BYTES, minimum=0, format="int64"),
    })


def _spec() -> Schema:
    return _object("The desired text-to-image workflow.", {
        "image": _string("Runtime image.", default=m.DEFAULT_IMAGE, minLength=1),
        "imagePullPolicy": _enum("Image pull policy.", m.PullPolicy, m.PullPolicy.IF_NOT_PRESENT),
        "modelStore": _model_store(),
        "base": _base(),
        "controlnets": _controlnets(),
        "loras": _loras(),
        "serving": _serving(),
        "basePool": _pool("spec.basePool", {}),
        "controlnetPool": _controlnet_pool(),
    }, required=["base"], rules=[
        _rule("self.loras.all(l, !has(l.k) || l.k <= self.base.defaults.steps)",
              "spec.loras[].k must not exceed spec.base.defaults.steps", ".loras"),
        _rule("self.serving.balDefaultK <= self.base.defaults.steps",
              "spec.serving.balDefaultK must not exceed spec.base.defaults.steps", ".serving.balDefaultK"),
        _rule("self.serving.latentParallelism != 'Enabled' || self.basePool.gpus % 2 == 0",
              "spec.basePool.gpus must be even when spec.serving.latentParallelism is Enabled "
              "(one GPU per CFG branch)", ".basePool.gpus"),
        _rule("self.base.defaults.width <= self.serving.maxWidth",
              "spec.base.defaults.width must not exceed spec.serving.maxWidth", ".base.defaults.width"),
        _rule("self.base.defaults.height <= self.serving.maxHeight",
              "spec.base.defaults.height must not exceed spec.serving.maxHeight", ".base.defaults.height"),
        _rule("!has(self.controlnetPool.sharedPoolName) || size(self.controlnets) > 0",
              "spec.controlnetPool.sharedPoolName needs at least one entry in spec.controlnets",
              ".controlnetPool.sharedPoolName"),
    ])


def _condition() -> Schema:
    return {"type": "object", "required": ["type", "status"], "properties": {
        "type": {"type": "string"},
        "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
        "reason": {"type": "string"},
        "message": {"type": "string"},
        "lastTransitionTime": {"type": "string", "format": "date-time"},
        "observedGeneration": {"type": "integer"},
    }}


def _pool_status() -> Schema:
    return {"type": "object", "properties": {
        "name": {"type": "string", "description": "Deployment and Service name."},
        "endpoint": {"type": "string", "description": "host:port clients call (gRPC)."},
        "shared": {"type": "boolean"},
        "ready": {"type": "string", "description": "readyReplicas/desiredReplicas."},
        "desiredReplicas": {"type": "integer"},
        "readyReplicas": {"type": "integer"},
        "updatedReplicas": {"type": "integer"},
        "controlnets": {"type": "array", "items": {"type": "string"}, "description": "Models the pool serves."},
        "autoscaling": {"type": "object", "description": "Present when the pool autoscales (its ScaledObject).",
                        "properties": {"minReplicas": {"type": "integer"}, "maxReplicas": {"type": "integer"},
                                       "state": {"type": "string",
                                                 "description": "Active, or the AutoscalingReady reason."}}},
    }}


def _status() -> Schema:
    return {"type": "object", "properties": {
        "observedGeneration": {"type": "integer"},
        "conditions": {"type": "array", "items": _condition(),
                       "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
        "basePool": _pool_status(),
        "controlnetPool": _pool_status(),
    }}


PRINTER_COLUMNS = [
    {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
    {"name": "Reason", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].reason',
     "description": "why not Ready: Unschedulable, ImagePullFailed, VolumeMountFailed, CrashLooping, "
                    "ProbesFailing, ..."},
    {"name": "Base", "type": "string", "jsonPath": ".status.basePool.ready", "description": "ready/desired"},
    {"name": "ControlNet", "type": "string", "jsonPath": ".status.controlnetPool.ready",
     "description": "ready/desired"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    {"name": "Model", "type": "string", "jsonPath": ".spec.base.model", "priority": 1},
    {"name": "ControlNet-Pool", "type": "string", "jsonPath": ".status.controlnetPool.name", "priority": 1},
    {"name": "Latent-Parallelism", "type": "string", "jsonPath": ".spec.serving.latentParallelism",
     "priority": 1},
    {"name": "Autoscaling", "type": "string", "jsonPath": '.status.conditions[?(@.type=="AutoscalingReady")].reason',
     "priority": 1, "description": "Active, or why not: KedaNotInstalled, ScaledObjectNotReady, MetricsUnavailable"},
]


def crd() -> dict[str, Any]:
    """The CustomResourceDefinition object, ready to apply."""
    root = {
        "type": "object",
        "required": ["spec"],
        "properties": {"spec": _spec(), "status": _status()},
        "x-kubernetes-validations": [_rule(
            f"size(self.metadata.name) <= {MAX_NAME} && self.metadata.name.matches('{DNS_LABEL}')",
            f"metadata.name must be a DNS label of at most {MAX_NAME} characters "
            "(it prefixes the pools' Service names)")],
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{m.PLURAL}.{m.GROUP}"},
        "spec": {
            "group": m.GROUP,
            "scope": "Namespaced",
            "names": {"kind": m.KIND, "listKind": f"{m.KIND}List", "plural": m.PLURAL,
                      "singular": m.KIND.lower(), "shortNames": ["t2i", "t2iwf"], "categories": ["swiftdiffusion"]},
            "versions": [{
                "name": m.VERSION, "served": True, "storage": True,
                "subresources": {"status": {}},
                # Lets the operator (and users) list a shared pool's members server-side.
                "selectableFields": [{"jsonPath": SHARED_POOL_FIELD}],
                "additionalPrinterColumns": PRINTER_COLUMNS,
                "schema": {"openAPIV3Schema": root},
            }],
        },
    }
