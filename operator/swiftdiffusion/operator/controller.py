"""Controller logic: make the cluster match a workflow (or a shared pool), then report status.

Level-based and idempotent: every call reads the current state, applies only the
children whose live state no longer contains the rendered manifest, and writes status
only when it changed. Running it any number of times, from any state, converges.
Runs in worker threads (the kubernetes client is synchronous).
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any

import pydantic
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from swiftdiffusion.operator import autoscaling, crd, drift, kube, netpol, render
from swiftdiffusion.operator import model as m
from swiftdiffusion.operator.api_errors import describe, shorten
from swiftdiffusion.operator.cache import ChildCache
from swiftdiffusion.operator.status import (
    PROBLEM_REASONS,
    SCALING_ACTIVE,
    PoolObservation,
    ScalingObservation,
    awaiting_volumes,
    compute_status,
    pod_problem,
    rolled_out,
)

log = logging.getLogger(__name__)

WORKFLOW, SHARED_POOL = "workflow", "shared-pool"
Key = tuple[str, str, str]  # (WORKFLOW | SHARED_POOL, namespace, name)
PERMANENT_RETRY_SECONDS = 300.0
# While a pool rolls out, its pods' scheduling, pulls and probes change without touching the
# Deployment the operator watches; look again this often so status names the cause.
RECHECK_PENDING_SECONDS = 10.0
SCALING_RECHECK_POLLS = 3
# A pool's objects: the watched kinds, and its ScaledObject (not watched: KEDA may be absent).
PRUNED_KINDS = (*render.POOL_KINDS, autoscaling.TYPE)


@dataclass(frozen=True)
class Reconciled:
    """What a reconcile asks for next: keys to reconcile now, and when to look at this one again."""

    follow_ups: list[Key] = field(default_factory=list)
    recheck_after: float | None = None


class ReconcileError(Exception):
    """A failed reconcile; `transient` ones are retried with backoff, others rarely."""

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


def _is_transient(error: Exception) -> bool:
    if isinstance(error, ApiException):
        return error.status in (0, 409, 429) or error.status >= 500
    return isinstance(error, HTTPError | OSError)


@dataclass
class Controller:
    api: ApiClient
    cache: ChildCache = field(default_factory=ChildCache)
    network: netpol.Settings = netpol.DEFAULT
    scaling: autoscaling.Settings = autoscaling.DEFAULT

    def reconcile(self, key: Key) -> Reconciled:
        """Reconciles one object; returns further keys to reconcile."""
        kind, namespace, name = key
        try:
            if kind == WORKFLOW:
                return self.reconcile_workflow(namespace, name)
            return Reconciled(self.reconcile_shared_pool(namespace, name))
        except (ApiException, HTTPError, OSError) as error:
            raise ReconcileError(describe(error), transient=_is_transient(error)) from error

    def _live(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """A child's live state: from the watch-fed cache, else from the API server."""
        known, cached = self.cache.lookup(kind, namespace, name)
        if known:
            return cached
        live = kube.get(self.api, api_version, kind, namespace, name)
        if live is None:
            self.cache.absent(kind, namespace, name)
        else:
            self.cache.put(kind, live)
        return live

    def prune(self, namespace: str, pool: str, kinds: tuple[tuple[str, str], ...] = PRUNED_KINDS) -> list[str]:
        """Deletes a pool that is no longer wanted while its owners live on (e.g. the last
        member left a shared pool, or a workflow dropped its ControlNets); only objects
        labelled as that pool of ours are touched."""
        deleted = []
        for api_version, kind in kinds:
            live = self._live(api_version, kind, namespace, pool)
            labels = (live or {}).get("metadata", {}).get("labels") or {}
            if live is None or labels.get(render.POOL_LABEL) != pool or not render.is_managed(labels):
                continue
            kube.delete(self.api, api_version, kind, namespace, pool)
            self.cache.drop(kind, live)
            deleted.append(f"{kind}/{pool}")
        return deleted

    def ensure(self, manifest: render.Manifest) -> bool:
        """Applies `manifest` unless the live object already holds all of it; True if it wrote."""
        meta = manifest["metadata"]
        live = self._live(manifest["apiVersion"], manifest["kind"], meta["namespace"], meta["name"])
        if live is not None and drift.contains(manifest, live):
            return False
        try:
            self.cache.put(manifest["kind"], kube.apply(self.api, manifest))
        except ApiException as error:
            if error.status == 404 and manifest["kind"] == autoscaling.KIND:
                return False  # KEDA is not installed: status says so (AutoscalingReady)
            raise
        return True

    def _ensure_all(self, manifests: list[render.Manifest]) -> list[str]:
        """Applies the pools' objects; with NetworkPolicies switched off, deletes those an earlier run made."""
        applied = [f"{mf['kind']}/{mf['metadata']['name']}" for mf in manifests if self.ensure(mf)]
        if self.network.enabled:
            return applied
        pools = sorted({(mf["metadata"]["namespace"], mf["metadata"]["name"]) for mf in manifests})
        return applied + [gone for ns, pool in pools for gone in self.prune(ns, pool, (netpol.TYPE,))]

    def _deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._live("apps/v1", "Deployment", namespace, name)

    def _observe(self, wf: m.Workflow) -> list[PoolObservation]:
        ns = wf.namespace
        base = render.base_pool_name(wf.name)
        pools = [PoolObservation("base", base, render.endpoint(base, ns), self._deployment(ns, base),
                                 scaling=self._scaling(ns, base, wf.spec.base_pool.autoscaling.enabled))]
        if cn := render.controlnet_pool_name(wf):
            deployment = self._deployment(ns, cn)
            wanted = wf.spec.controlnet_pool.autoscaling.enabled or (
                bool(wf.shared_pool) and self._live(*autoscaling.TYPE, ns, cn) is not None)
            pools.append(PoolObservation("controlnet", cn, render.endpoint(cn, ns), deployment,
                                         shared=bool(wf.shared_pool), controlnets=_served_controlnets(deployment),
                                         mismatch=_dtype_mismatch(wf, cn, deployment),
                                         scaling=self._scaling(ns, cn, wanted)))
        return [self._diagnose(pool) for pool in pools]

    def _scaling(self, namespace: str, pool: str, wanted: bool) -> ScalingObservation | None:
        """The pool's autoscaling as KEDA reports it on its ScaledObject (read from the API
        server: ScaledObjects are not watched, their status is rechecked while not active)."""
        if not wanted:
            return None
        if not kube.api_served(self.api, autoscaling.API_VERSION):
            return ScalingObservation(0, 0, "KedaNotInstalled", f"the {autoscaling.API_VERSION} ScaledObject API is "
                                      "not served: install KEDA; replicas stay as they are meanwhile")
        live = kube.get(self.api, *autoscaling.TYPE, namespace, pool)
        if live is None:
            return ScalingObservation(0, 0, "ScaledObjectPending", "its ScaledObject is not created yet")
        spec = live["spec"]
        bounds = spec.get("minReplicaCount", 0), spec.get("maxReplicaCount", 0)
        conditions = {c["type"]: c for c in live.get("status", {}).get("conditions", [])}
        fallback, ready = conditions.get("Fallback", {}), conditions.get("Ready", {})
        if fallback.get("status") == "True":
            return ScalingObservation(*bounds, "MetricsUnavailable", "KEDA cannot read the pool's metrics, replicas "
                                      f"are held: {fallback.get('message') or 'fallback active'}")
        if ready.get("status") != "True":
            return ScalingObservation(*bounds, "ScaledObjectNotReady",
                                      ready.get("message") or "KEDA has not reported on its ScaledObject yet")
        return ScalingObservation(*bounds, SCALING_ACTIVE, f"{bounds[0]}-{bounds[1]} replicas")

    def _diagnose(self, pool: PoolObservation) -> PoolObservation:
        """A pool that is not rolled out gets what its pods say is wrong (one LIST, read-only), and
        what their events say while pods wait for their volumes (a second LIST, only then: a
        volume that cannot be mounted shows in the kubelet's events, not in pod status)."""
        if pool.deployment is None or rolled_out(pool):
            return pool
        namespace = pool.deployment["metadata"]["namespace"]
        pods = kube.list_pods(self.api, namespace, f"{render.POOL_LABEL}={pool.name}")
        waiting = awaiting_volumes(pods)
        events = kube.list_pod_events(self.api, namespace, waiting) if waiting else []
        return dataclasses.replace(pool, problem=pod_problem(pods, events))

    def reconcile_workflow(self, namespace: str, name: str) -> Reconciled:
        body = kube.get(self.api, f"{m.GROUP}/{m.VERSION}", m.KIND, namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return Reconciled()  # owner references let the garbage collector remove the children
        previous = body.get("status") or {}
        try:
            wf = m.Workflow.from_body(body)
        except pydantic.ValidationError as error:  # the CRD schema should make this unreachable
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
            self._report(body, previous, [], shorten(f"spec does not match the operator's model: {problems}"),
                         transient=False)
            raise ReconcileError(str(error), transient=False) from error
        try:
            applied = self._ensure_all(render.render_workflow(wf, self.network, self.scaling))
            if not render.has_dedicated_controlnet_pool(wf):
                applied += self.prune(namespace, render.dedicated_controlnet_pool_name(wf.name))
            applied += self._prune_scalers(wf)
        except ApiException as error:  # reported in status (once per distinct message), then retried
            self._report(body, previous, self._observe(wf), f"applying children failed: {describe(error)}",
                         transient=_is_transient(error))
            raise ReconcileError(describe(error), transient=_is_transient(error)) from error
        if applied:
            log.info("%s/%s: changed %s", namespace, name, ", ".join(applied))
            kube.post_event(self.api, body, reason="Applied", message="changed " + ", ".join(applied))
        pools = self._observe(wf)
        self._report(body, previous, pools, None)
        follow_ups: list[Key] = [(SHARED_POOL, namespace, wf.shared_pool)] if wf.shared_pool else []
        pending = any(not rolled_out(pool) or (pool.scaling and pool.scaling.reason != SCALING_ACTIVE)
                      for pool in pools)
        if pending:
            return Reconciled(follow_ups, RECHECK_PENDING_SECONDS)
        # ScaledObjects are not watched: KEDA's verdict (a metrics outage) is polled, a few of
        # KEDA's own polling intervals apart.
        recheck = max(RECHECK_PENDING_SECONDS, SCALING_RECHECK_POLLS * self.scaling.polling_interval_seconds)
        return Reconciled(follow_ups, recheck if any(p.scaling for p in pools) else None)

    def _prune_scalers(self, wf: m.Workflow) -> list[str]:
        """ScaledObjects of this workflow's own pools whose autoscaling was turned off."""
        off = [render.base_pool_name(wf.name)] if not wf.spec.base_pool.autoscaling.enabled else []
        if render.has_dedicated_controlnet_pool(wf) and not wf.spec.controlnet_pool.autoscaling.enabled:
            off.append(render.dedicated_controlnet_pool_name(wf.name))
        return [gone for pool in off for gone in self.prune(wf.namespace, pool, (autoscaling.TYPE,))]

    def _report(self, body: dict[str, Any], previous: dict[str, Any], pools: list[PoolObservation],
                error: str | None, *, transient: bool = True) -> None:
        """Writes status (and a warning event for a new error) only when something changed."""
        meta = body["metadata"]
        status = compute_status(meta.get("generation", 1), pools, previous, error, transient=transient)
        if status == previous:
            return
        ready = next(c for c in status["conditions"] if c["type"] == "Ready")
        if ready["reason"] in PROBLEM_REASONS and _ready_message(previous) != ready["message"]:
            kube.post_event(self.api, body, reason=ready["reason"], message=ready["message"], warning=True)
        dropped = {key: None for key in previous.keys() - status.keys()}  # e.g. a pool that went away
        kube.patch_status(self.api, meta["namespace"], meta["name"], {**status, **dropped})

    def reconcile_shared_pool(self, namespace: str, pool: str) -> list[Key]:
        """Applies the shared ControlNet pool for the workflows that currently name it."""
        selector = f"{crd.SHARED_POOL_FIELD.lstrip('.')}={pool}"  # a selectable field of the CRD
        bodies = [b for b in kube.list_workflows(self.api, namespace, selector)
                  if not b["metadata"].get("deletionTimestamp")]
        members = []
        for body in bodies:
            try:
                wf = m.Workflow.from_body(body)
            except pydantic.ValidationError:
                continue  # reported by that workflow's own reconcile
            if wf.shared_pool == pool:
                members.append(wf)
        if not members:  # gone with its last owner (garbage collector), or left by it (prune)
            pruned = self.prune(namespace, render.shared_controlnet_pool_name(pool))
            if pruned:
                log.info("%s: shared pool %s has no members left, deleted %s", namespace, pool, ", ".join(pruned))
            return []
        applied = self._ensure_all(render.render_shared_pool(pool, members, self.network, self.scaling))
        if not render.shared_controlnet_plan(pool, members).autoscaling.enabled:
            applied += self.prune(namespace, render.shared_controlnet_pool_name(pool), (autoscaling.TYPE,))
        if applied:
            leader = render.oldest_first(members)[0]
            leader_body = next(b for b in bodies if b["metadata"]["uid"] == leader.uid)
            log.info("%s: shared pool %s applied %s", namespace, pool, ", ".join(applied))
            kube.post_event(self.api, leader_body, reason="SharedPoolApplied",
                            message=f"shared ControlNet pool {pool} for {len(members)} workflows: "
                                    + ", ".join(applied))
        return []


def _served_controlnets(deployment: dict[str, Any] | None) -> tuple[str, ...]:
    """ControlNet names a pool serves, as recorded on its Deployment."""
    if deployment is None:
        return ()
    names = deployment["metadata"].get("annotations", {}).get(render.SERVED_CONTROLNETS, "")
    return tuple(n for n in names.split(",") if n)


def _dtype_mismatch(wf: m.Workflow, pool: str, deployment: dict[str, Any] | None) -> str | None:
    """A shared pool runs its ControlNets in its oldest member's dtype: say so to a member whose
    base model runs in another (its residuals are cast), instead of resolving it silently."""
    if not wf.shared_pool or deployment is None:
        return None
    runs = deployment["metadata"].get("annotations", {}).get(render.CONTROLNET_DTYPE)
    if runs is None or runs == str(wf.spec.base.dtype):
        return None
    return (f"shared ControlNet pool {pool} runs its ControlNets in {runs} (its oldest member's spec.base.dtype), "
            f"this workflow's base model in {wf.spec.base.dtype}: give every member of the pool the same dtype")


def _ready_message(status: dict[str, Any]) -> str | None:
    return next((c.get("message") for c in status.get("conditions", []) if c.get("type") == "Ready"), None)
