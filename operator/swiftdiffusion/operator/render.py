"""Pure builders: a workflow (or a shared pool's member workflows) in, child manifests out.

Each pool is a ConfigMap (the runtime config), a Deployment (GPU-pinned runtime pods),
a Service (gRPC + metrics) and a PodDisruptionBudget, all named after the pool.
Every manifest carries a hash of its own content (APPLIED_HASH), so the controller can
tell whether the live object still holds exactly what was last applied.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from swiftdiffusion.operator import model as m
from swiftdiffusion.operator import autoscaling, netpol
from swiftdiffusion.operator import runtime_config as rc
from swiftdiffusion.runtime.config import RuntimeConfig

Manifest = dict[str, Any]

FIELD_MANAGER = "swiftdiffusion-operator"
GPU_RESOURCE = "nvidia.com/gpu"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
APPLIED_HASH = "swiftdiffusion.io/applied-hash"
CONFIG_HASH = "swiftdiffusion.io/config-hash"
SERVED_CONTROLNETS = "swiftdiffusion.io/controlnets"  # on a ControlNet pool's Deployment: the names it serves
CONTROLNET_DTYPE = "swiftdiffusion.io/controlnet-dtype"  # ... and the dtype they run in
POOL_LABEL = "swiftdiffusion.io/pool"
WORKFLOW_LABEL = "swiftdiffusion.io/workflow"
SHARED_POOL_LABEL = "swiftdiffusion.io/shared-pool"
MANAGED_BY = {"app.kubernetes.io/managed-by": FIELD_MANAGER}
RUNTIME_UID = 10001  # the runtime image's user (Dockerfile.runtime)
CONTAINER = "runtime"  # the pool pods' one container
PRE_STOP_SECONDS = 5
LOAD_SECONDS = 600  # startup probe budget: weights load from the model store
DOWNLOAD_SECONDS = 3600  # ... or download into it first (SDXL base: about 14 GB, 4 MB/s)
# A health check is one cheap RPC: checking often makes a pod Ready (and an autoscaled pool
# serve) within 2 s of its server starting, instead of up to a 10 s period later.
STARTUP_PROBE_SECONDS = 2
READINESS_PROBE_SECONDS, LIVENESS_PROBE_SECONDS = 5, 10  # a serving pod answers both, beside its requests
# preStop, then the runtime's own drain (in-flight requests finish), then a margin to exit.
TERMINATION_GRACE_SECONDS = PRE_STOP_SECONDS + int(rc.SHUTDOWN_GRACE_SECONDS) + 10
BASE, CONTROLNET = "base", "controlnet"
POOL_KINDS = (("v1", "ConfigMap"), netpol.TYPE, ("apps/v1", "Deployment"), ("v1", "Service"),
              ("policy/v1", "PodDisruptionBudget"))


def is_managed(labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in MANAGED_BY.items())


def base_pool_name(workflow: str) -> str:
    return f"swd-{workflow}-base"


def dedicated_controlnet_pool_name(workflow: str) -> str:
    return f"swd-{workflow}-cn"


def shared_controlnet_pool_name(pool: str) -> str:
    return f"swd-cn-{pool}"


def controlnet_pool_name(wf: m.Workflow) -> str | None:
    """The ControlNet pool a workflow calls, or None when it has no ControlNets."""
    if not wf.spec.controlnets:
        return None
    if wf.shared_pool:
        return shared_controlnet_pool_name(wf.shared_pool)
    return dedicated_controlnet_pool_name(wf.name)


def endpoint(pool: str, namespace: str) -> str:
    return f"{pool}.{namespace}.svc:{rc.GRPC_PORT}"


@dataclass(frozen=True)
class PoolPlan:
    """Everything that decides one pool's objects."""

    name: str
    role: str
    workflow: m.Workflow  # image, model store and pool settings come from this workflow
    pool: m.Pool
    config: RuntimeConfig
    labels: dict[str, str]
    owners: tuple[dict[str, Any], ...]
    callers: tuple[str, ...] = ()  # a ControlNet pool's: the base pools that call it
    autoscaling: m.Autoscaling = m.Autoscaling()  # a shared pool's: derived from its members


def owner_reference(wf: m.Workflow, *, controller: bool) -> dict[str, Any]:
    return {"apiVersion": f"{m.GROUP}/{m.VERSION}", "kind": m.KIND, "name": wf.name, "uid": wf.uid,
            "controller": controller, "blockOwnerDeletion": controller}


def _labels(name: str, role: str, extra: dict[str, str]) -> dict[str, str]:
    return {"app.kubernetes.io/name": "swiftdiffusion", "app.kubernetes.io/component": f"{role}-pool",
            "app.kubernetes.io/instance": name, **MANAGED_BY, POOL_LABEL: name, **extra}


def _metadata(plan: PoolPlan, kind_labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"name": plan.name, "namespace": plan.workflow.namespace, "labels": {**plan.labels, **(kind_labels or {})},
            "ownerReferences": list(plan.owners)}


def _stamp(manifest: Manifest) -> Manifest:
    """Adds the hash of the manifest's own content as an annotation."""
    text = json.dumps(manifest, sort_keys=True, separators=(",", ":"))
    manifest["metadata"].setdefault("annotations", {})[APPLIED_HASH] = rc.digest(text)
    return manifest


def _config_map(plan: PoolPlan, text: str) -> Manifest:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _metadata(plan), "data": {rc.CONFIG_FILE: text}}


def _service(plan: PoolPlan) -> Manifest:
    """A ControlNet pool's Service is headless: base servers resolve every ready pod and spread
    their residual sessions over them (gRPC round_robin), so scaling the pool out takes load."""
    headless = {"clusterIP": "None"} if plan.role == CONTROLNET else {}
    return {"apiVersion": "v1", "kind": "Service", "metadata": _metadata(plan), "spec": {
        "type": "ClusterIP",
        **headless,
        "selector": {POOL_LABEL: plan.name},
        "ports": [
            {"name": "grpc", "port": rc.GRPC_PORT, "targetPort": "grpc", "protocol": "TCP",
             "appProtocol": "kubernetes.io/h2c"},
            {"name": "metrics", "port": rc.METRICS_PORT, "targetPort": "metrics", "protocol": "TCP"},
        ],
    }}


def _pdb(plan: PoolPlan) -> Manifest:
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": _metadata(plan),
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {POOL_LABEL: plan.name}}}}


def _network_policy(plan: PoolPlan, settings: netpol.Settings) -> Manifest:
    """A ControlNet pool answers its callers' base pools only; a base pool answers its clients."""
    callers = [netpol.pods_of(POOL_LABEL, plan.callers)] if plan.role == CONTROLNET else settings.base_clients
    return netpol.policy(_metadata(plan), {"matchLabels": {POOL_LABEL: plan.name}}, callers, settings)


def _model_volume(store: m.ModelStore) -> dict[str, Any] | None:
    if store.type is m.ModelStoreType.PERSISTENT_VOLUME_CLAIM:
        return {"name": "models", "persistentVolumeClaim": {"claimName": store.claim_name, "readOnly": store.read_only}}
    if store.type is m.ModelStoreType.HOST_PATH:
        return {"name": "models", "hostPath": {"path": store.host_path, "type": "Directory"}}
    return None


def _quantities(values: dict[str, m.Quantity], gpus: int | None = None) -> dict[str, str]:
    out = {key: str(value) for key, value in values.items()}
    if gpus is not None:
        out[GPU_RESOURCE] = str(gpus)
    return out


def _grpc_probe(period: int, failures: int) -> dict[str, Any]:
    """Standard gRPC health checking on the serving port (service "")."""
    return {"grpc": {"port": rc.GRPC_PORT}, "periodSeconds": period, "failureThreshold": failures}


def _thread_env(resources: m.Resources) -> list[dict[str, Any]]:
    """With a CPU limit, torch's intra-op threads follow it (the limit rounded up to whole
    cores, from the downward API) rather than the node's core count: more threads than the
    CFS quota runs spend it in parallel bursts and then wait out the period, and a 0.2-core
    pod with two threads served 1.6-3.4 times slower (docs/operator.md)."""
    if "cpu" not in resources.limits:
        return []
    return [{"name": "OMP_NUM_THREADS", "valueFrom": {"resourceFieldRef": {
        "containerName": CONTAINER, "resource": "limits.cpu", "divisor": "1"}}}]


def _container(plan: PoolPlan) -> dict[str, Any]:
    spec = plan.workflow.spec
    mounts = [{"name": "config", "mountPath": rc.CONFIG_DIR, "readOnly": True},
              {"name": "tmp", "mountPath": "/tmp"}]
    if _model_volume(spec.model_store):
        mounts.append({"name": "models", "mountPath": spec.model_store.path, "readOnly": spec.model_store.read_only})
    return {
        "name": CONTAINER,
        "image": spec.image,
        "imagePullPolicy": str(spec.image_pull_policy),
        "command": ["swiftdiffusion"],
        "args": [f"serve-{plan.role}", "--config", f"{rc.CONFIG_DIR}/{rc.CONFIG_FILE}"],
        "ports": [{"name": "grpc", "containerPort": rc.GRPC_PORT, "protocol": "TCP"},
                  {"name": "metrics", "containerPort": rc.METRICS_PORT, "protocol": "TCP"}],
        "env": [{"name": "HOME", "value": "/tmp"}, *_thread_env(plan.pool.resources)],
        "resources": {"requests": _quantities(plan.pool.resources.requests),
                      "limits": _quantities(plan.pool.resources.limits, plan.pool.gpus)},
        # Loading SDXL weights takes minutes, downloading them first (modelDownloads) up to an
        # hour: the startup probe holds the others off meanwhile.
        "startupProbe": _grpc_probe(period=STARTUP_PROBE_SECONDS, failures=(
            DOWNLOAD_SECONDS if plan.config.model_downloads else LOAD_SECONDS) // STARTUP_PROBE_SECONDS),
        "readinessProbe": _grpc_probe(period=READINESS_PROBE_SECONDS, failures=3),
        "livenessProbe": _grpc_probe(period=LIVENESS_PROBE_SECONDS, failures=3),
        # Endpoints and clients learn of the deletion before the server stops accepting.
        "lifecycle": {"preStop": {"sleep": {"seconds": PRE_STOP_SECONDS}}},
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": mounts,
    }


def _pod_spec(plan: PoolPlan) -> dict[str, Any]:
    pool = plan.pool
    volumes = [{"name": "config", "configMap": {"name": plan.name}}, {"name": "tmp", "emptyDir": {}}]
    models = _model_volume(plan.workflow.spec.model_store)
    if models:
        volumes.append(models)
    tolerations = [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]
    tolerations += [t.model_dump(by_alias=True, exclude_none=True) for t in pool.tolerations]
    spec: dict[str, Any] = {
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": GPU_PRODUCT_LABEL, "operator": "In", "values": list(pool.gpu_products)}]},
        ]}}},
        "tolerations": tolerations,
        "securityContext": {"runAsNonRoot": True, "runAsUser": RUNTIME_UID, "runAsGroup": RUNTIME_UID,
                            "fsGroup": RUNTIME_UID, "seccompProfile": {"type": "RuntimeDefault"}},
        "enableServiceLinks": False,
        # The runtime never calls the API server: no token in its pods to steal.
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
        "containers": [_container(plan)],
        "volumes": volumes,
    }
    if pool.priority_class_name:
        spec["priorityClassName"] = pool.priority_class_name
    return spec


def _deployment(plan: PoolPlan, config_hash: str) -> Manifest:
    pool = plan.pool
    spec: dict[str, Any] = {
        "selector": {"matchLabels": {POOL_LABEL: plan.name}},
        # GPUs are scarce, but a pool must keep serving while it rolls: surge one pod at a time.
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
        "revisionHistoryLimit": 3,
        "template": {
            "metadata": {"labels": {**pool.pod_labels, **plan.labels},
                         "annotations": {**pool.pod_annotations, CONFIG_HASH: config_hash}},
            "spec": _pod_spec(plan),
        },
    }
    if not plan.autoscaling.enabled:  # otherwise the autoscaler owns .spec.replicas
        spec = {"replicas": pool.replicas, **spec}
    metadata = _metadata(plan)
    if plan.role == CONTROLNET:
        metadata["annotations"] = {SERVED_CONTROLNETS: ",".join(cn.name for cn in plan.config.controlnets),
                                   CONTROLNET_DTYPE: str(plan.config.controlnet.dtype)}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata, "spec": spec}


def _scaled_object(plan: PoolPlan, scaling: autoscaling.Settings) -> Manifest:
    callers = plan.callers if plan.role == CONTROLNET else ()
    return autoscaling.scaled_object(_metadata(plan), plan.name, plan.autoscaling, plan.workflow.namespace, callers,
                                     scaling)


def render_pool(plan: PoolPlan, network: netpol.Settings,
                scaling: autoscaling.Settings = autoscaling.DEFAULT) -> list[Manifest]:
    """ConfigMap, NetworkPolicy (if on: before any pod exists), Deployment, Service,
    PodDisruptionBudget and, with autoscaling on, the ScaledObject of one pool (apply in
    this order)."""
    text = rc.to_yaml(plan.config)
    policies = [_network_policy(plan, network)] if network.enabled else []
    scalers = [_scaled_object(plan, scaling)] if plan.autoscaling.enabled else []
    manifests = [_config_map(plan, text), *policies, _deployment(plan, rc.digest(text)), _service(plan), _pdb(plan),
                 *scalers]
    return [_stamp(manifest) for manifest in manifests]


def base_pool_plan(wf: m.Workflow) -> PoolPlan:
    cn_pool = controlnet_pool_name(wf)
    cn_endpoint = endpoint(cn_pool, wf.namespace) if cn_pool else None
    name = base_pool_name(wf.name)
    return PoolPlan(
        name=name, role=BASE, workflow=wf, pool=wf.spec.base_pool,
        config=rc.base_config(wf, cn_endpoint),
        labels=_labels(name, BASE, {WORKFLOW_LABEL: wf.name}),
        owners=(owner_reference(wf, controller=True),),
        autoscaling=wf.spec.base_pool.autoscaling,
    )


def dedicated_controlnet_plan(wf: m.Workflow) -> PoolPlan:
    name = dedicated_controlnet_pool_name(wf.name)
    return PoolPlan(
        name=name, role=CONTROLNET, workflow=wf, pool=wf.spec.controlnet_pool,
        config=rc.controlnet_config(wf, wf.spec.controlnets),
        labels=_labels(name, CONTROLNET, {WORKFLOW_LABEL: wf.name}),
        owners=(owner_reference(wf, controller=True),),
        callers=(base_pool_name(wf.name),),
        autoscaling=wf.spec.controlnet_pool.autoscaling,
    )


def oldest_first(members: Sequence[m.Workflow]) -> list[m.Workflow]:
    return sorted(members, key=lambda wf: (wf.creation_timestamp, wf.name))


def shared_controlnets(members: Sequence[m.Workflow]) -> list[m.ControlNetSpec]:
    """The union of the members' ControlNets by name; the oldest member's definition wins a clash."""
    union: dict[str, m.ControlNetSpec] = {}
    for wf in oldest_first(members):
        for cn in wf.spec.controlnets:
            union.setdefault(cn.name, cn)
    return [union[name] for name in sorted(union)]


def shared_controlnet_plan(pool: str, members: Sequence[m.Workflow]) -> PoolPlan:
    """One pool for every member workflow, each an owner, so it lives until the last one goes.

    Pool settings (image, GPUs, replicas) come from the oldest member: adding a workflow
    never changes how an existing shared pool runs, only which models it serves. Its
    autoscaling follows every member (`autoscaling.shared_bounds`): its demand is theirs.
    """
    ordered = oldest_first(members)
    leader = ordered[0]
    name = shared_controlnet_pool_name(pool)
    return PoolPlan(
        name=name, role=CONTROLNET, workflow=leader, pool=leader.spec.controlnet_pool,
        config=rc.controlnet_config(leader, shared_controlnets(ordered)),
        labels=_labels(name, CONTROLNET, {SHARED_POOL_LABEL: pool}),
        owners=tuple(owner_reference(wf, controller=False) for wf in sorted(ordered, key=lambda wf: wf.uid)),
        callers=tuple(base_pool_name(wf.name) for wf in ordered),
        autoscaling=autoscaling.shared_bounds([wf.spec.controlnet_pool.autoscaling for wf in ordered]),
    )


def has_dedicated_controlnet_pool(wf: m.Workflow) -> bool:
    """Rendering it and pruning it are decided by this one rule."""
    return bool(wf.spec.controlnets) and not wf.shared_pool


def render_workflow(wf: m.Workflow, network: netpol.Settings = netpol.DEFAULT,
                    scaling: autoscaling.Settings = autoscaling.DEFAULT) -> list[Manifest]:
    """The workflow's own children: its base pool and, unless shared, its ControlNet pool."""
    manifests = render_pool(base_pool_plan(wf), network, scaling)
    if has_dedicated_controlnet_pool(wf):
        manifests += render_pool(dedicated_controlnet_plan(wf), network, scaling)
    return manifests


def render_shared_pool(pool: str, members: Sequence[m.Workflow], network: netpol.Settings = netpol.DEFAULT,
                       scaling: autoscaling.Settings = autoscaling.DEFAULT) -> list[Manifest]:
    return render_pool(shared_controlnet_plan(pool, members), network, scaling)
