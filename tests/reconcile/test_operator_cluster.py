"""The operator against a real API server, scheduler, controllers and fake GPU nodes."""
from __future__ import annotations

import signal
from collections.abc import Iterator
from typing import Any

import pytest

from swiftdiffusion.operator import kube, rbac, render
from swiftdiffusion.operator.local_process import LocalOperator
from tests.reconcile.fixtures import Cluster, settle, wait_until
from tests.reconcile.workflows import CANNY, DEPTH, example

pytestmark = pytest.mark.cluster

H800 = "NVIDIA-H800"
BASE_MODEL = "stabilityai/stable-diffusion-xl-base-1.0"


def _workflow(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "swiftdiffusion.io/v1alpha1", "kind": "T2IWorkflow", "metadata": {"name": name},
            "spec": {"base": {"model": BASE_MODEL}, **spec}}


@pytest.fixture
def model_volume(cluster: Cluster) -> Iterator[str]:
    """A pre-bound PersistentVolume + claim `sdxl-models`, as an admin provides the model store."""
    claim, volume = "sdxl-models", f"{cluster.namespace}-models"
    kube.request(cluster.api, "POST", "/api/v1/persistentvolumes", body={
        "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": volume},
        "spec": {"capacity": {"storage": "1Ti"}, "accessModes": ["ReadOnlyMany"], "storageClassName": "",
                 "persistentVolumeReclaimPolicy": "Retain", "hostPath": {"path": "/data/models"},
                 "claimRef": {"namespace": cluster.namespace, "name": claim}}})
    try:
        kube.request(cluster.api, "POST", f"/api/v1/namespaces/{cluster.namespace}/persistentvolumeclaims", body={
            "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": claim},
            "spec": {"accessModes": ["ReadOnlyMany"], "storageClassName": "", "volumeName": volume,
                     "resources": {"requests": {"storage": "1Ti"}}}})
        yield claim
    finally:
        kube.request(cluster.api, "DELETE", f"/api/v1/persistentvolumes/{volume}")


def test_examples_become_ready_with_pods_on_allowed_gpu_nodes(operator: LocalOperator, cluster: Cluster,
                                                              model_volume: str) -> None:
    names = []
    for file in ("sdxl-canny-depth", "sdxl-latent-parallel", "shared-pool"):
        for doc in example(file):
            cluster.apply_workflow(doc)
            names.append(doc["metadata"]["name"])
    for name in names:
        body = cluster.wait_ready(name)
        spec, status = body["spec"], body["status"]
        assert status["basePool"]["endpoint"] == f"swd-{name}-base.{cluster.namespace}.svc:50051"
        pools = [status["basePool"]["name"], status["controlnetPool"]["name"]]
        for pool_name, pool in zip(pools, (spec["basePool"], spec["controlnetPool"]), strict=True):
            pods = cluster.pods(pool_name)
            assert pods, pool_name
            for pod in pods:
                node = cluster.node(pod["spec"]["nodeName"])
                assert node["metadata"]["labels"]["nvidia.com/gpu.product"] in pool["gpuProducts"]
                assert pod["status"]["phase"] == "Running"
    lp = cluster.pods("swd-sdxl-latent-parallel-base")[0]["spec"]["containers"][0]
    assert lp["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert cluster.workflow("product-shots")["status"]["controlnetPool"]["name"] == "swd-cn-shared"

    columns, rows = cluster.table()
    assert columns == ["Name", "Ready", "Reason", "Base", "ControlNet", "Age"]
    assert rows["sdxl-canny-depth"][1:5] == ["True", "PoolsReady", "2/2", "1/1"]
    wide_columns, wide_rows = cluster.table(wide=True)
    assert {"Reason", "Model", "ControlNet-Pool", "Latent-Parallelism"} <= set(wide_columns)
    assert wide_rows["sdxl-latent-parallel"][wide_columns.index("Latent-Parallelism")] == "Enabled"


INVALID: dict[str, tuple[dict[str, Any], str]] = {
    "min replicas above max": ({"basePool": {"autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 2}}},
                               "spec.basePool.autoscaling.minReplicas"),
    "controlnet pool min above max": ({"controlnets": [CANNY], "controlnetPool": {"autoscaling": {
        "minReplicas": 3, "maxReplicas": 1}}}, "spec.controlnetPool.autoscaling.minReplicas"),
    "lora k above steps": ({"base": {"model": BASE_MODEL, "defaults": {"steps": 20}},
                            "loras": [{"name": "a", "source": "/a.safetensors", "k": 25}]}, "spec.loras"),
    "bal default k above steps": ({"base": {"model": BASE_MODEL, "defaults": {"steps": 8}}},
                                  "spec.serving.balDefaultK"),
    "duplicate controlnet names": ({"controlnets": [CANNY, {**DEPTH, "name": "canny"}]}, "spec.controlnets[1]"),
    "duplicate lora names": ({"loras": [{"name": "a", "source": "/a.safetensors"}, {"name": "a", "source": "/b.safetensors"}]},
                             "spec.loras[1]"),
    "unknown latent parallelism": ({"serving": {"latentParallelism": "Sometimes"}},
                                   "spec.serving.latentParallelism"),
    "latent parallelism with one gpu": ({"serving": {"latentParallelism": "Enabled"}}, "spec.basePool.gpus"),
    "empty gpu product list": ({"basePool": {"gpuProducts": []}}, "spec.basePool.gpuProducts"),
    "negative conditioning scale": ({"controlnets": [{**CANNY, "conditioningScale": -0.5}]},
                                    "spec.controlnets[0].conditioningScale"),
    "negative lora scale": ({"loras": [{"name": "a", "source": "/a.safetensors", "scale": -1}]}, "spec.loras[0].scale"),
    "negative guidance scale": ({"base": {"model": BASE_MODEL, "defaults": {"guidanceScale": -1}}},
                                "spec.base.defaults.guidanceScale"),
    "width not a multiple of 8": ({"base": {"model": BASE_MODEL, "defaults": {"width": 1020}}},
                                  "spec.base.defaults.width"),
    "height not a multiple of 8": ({"base": {"model": BASE_MODEL, "defaults": {"height": 777}}},
                                   "spec.base.defaults.height"),
    "width above max width": ({"base": {"model": BASE_MODEL, "defaults": {"width": 4096}}},
                              "spec.base.defaults.width"),
    "unknown dtype": ({"base": {"model": BASE_MODEL, "dtype": "float8"}}, "spec.base.dtype"),
    "unknown controlnet mode": ({"serving": {"controlnetMode": "eventually"}}, "spec.serving.controlnetMode"),
    "pvc store without claim": ({"modelStore": {"type": "PersistentVolumeClaim"}}, "spec.modelStore.claimName"),
    "missing base model": ({"base": {"revision": "main"}}, "spec.base.model"),
    "zero steps": ({"base": {"model": BASE_MODEL, "defaults": {"steps": 0}}}, "spec.base.defaults.steps"),
    "gpu in resources": ({"basePool": {"resources": {"limits": {"nvidia.com/gpu": 4}}}},
                         "spec.basePool.resources"),
    "shared pool name not a dns label": ({"controlnets": [CANNY], "controlnetPool": {"sharedPoolName": "Pool_1"}},
                                         "spec.controlnetPool.sharedPoolName"),
    "negative replicas": ({"basePool": {"replicas": -1}}, "spec.basePool.replicas"),
    "autoscaling to zero": ({"basePool": {"autoscaling": {"enabled": True, "minReplicas": 0, "maxReplicas": 2}}},
                            "spec.basePool.autoscaling.minReplicas"),
    # Classes the API server would otherwise admit and then refuse in the rendered children:
    "pod label value with a space": ({"basePool": {"podLabels": {"team": "a b"}}}, "spec.basePool.podLabels.team"),
    "pod label key not a qualified name": ({"basePool": {"podLabels": {"bad key": "x"}}}, "spec.basePool.podLabels"),
    "pod label key prefix too long": ({"basePool": {"podLabels": {"a" * 254 + "/x": "y"}}},
                                      "spec.basePool.podLabels"),
    "pod label colliding with the pool selector": ({"basePool": {"podLabels": {"swiftdiffusion.io/pool": "x"}}},
                                                   "spec.basePool.podLabels"),
    "pod label colliding with managed-by": ({"controlnets": [CANNY], "controlnetPool": {
        "podLabels": {"app.kubernetes.io/managed-by": "me"}}}, "spec.controlnetPool.podLabels"),
    "pod annotation key not a qualified name": ({"basePool": {"podAnnotations": {"-x": "y"}}},
                                                "spec.basePool.podAnnotations"),
    "toleration with empty key and operator Equal": ({"basePool": {"tolerations": [{"value": "x"}]}},
                                                     "spec.basePool.tolerations[0].operator"),
    "toleration Exists with a value": ({"basePool": {"tolerations": [{"key": "k", "operator": "Exists",
                                                                      "value": "v"}]}},
                                       "spec.basePool.tolerations[0].value"),
    "toleration seconds without NoExecute": ({"basePool": {"tolerations": [{"key": "k", "value": "v",
                                                                            "tolerationSeconds": 5}]}},
                                             "spec.basePool.tolerations[0].tolerationSeconds"),
    "toleration key not a qualified name": ({"basePool": {"tolerations": [{"key": "a b", "value": "v"}]}},
                                            "spec.basePool.tolerations[0].key"),
    "requests above limits": ({"basePool": {"resources": {"requests": {"cpu": "4"}, "limits": {"cpu": "2"}}}},
                              "spec.basePool.resources.requests"),
    "memory requests above limits in other units": ({"basePool": {"resources": {
        "requests": {"memory": "2Gi"}, "limits": {"memory": "2000M"}}}}, "spec.basePool.resources.requests"),
    "negative cpu": ({"basePool": {"resources": {"requests": {"cpu": "-1"}}}}, "spec.basePool.resources.requests"),
    "unknown resource": ({"basePool": {"resources": {"limits": {"example.com/fpga": 1}}}}, "spec.basePool.resources"),
    "lora source that is a model id": ({"loras": [{"name": "a", "source": "someone/pixel-art"}]},
                                       "spec.loras[0].source"),
    "lora source that is pickled": ({"loras": [{"name": "a", "source": "https://h/x.ckpt"}]}, "spec.loras[0].source"),
}


def test_invalid_workflows_are_rejected_naming_the_field_and_create_nothing(
        operator: LocalOperator, cluster: Cluster) -> None:
    assert len(INVALID) >= 15
    unexpected = []
    for case, (spec, field) in INVALID.items():
        body = _workflow("bad", **spec)
        try:
            cluster.create_workflow(body)
        except kube.ApiException as error:
            if error.status != 422 or field not in (error.body or ""):
                unexpected.append(f"{case}: {error.status} {error.body}")
        else:
            unexpected.append(f"{case}: accepted")
            cluster.delete_workflow("bad")
    long_name = _workflow("x" * 51)
    with pytest.raises(kube.ApiException, match="metadata.name"):
        cluster.create_workflow(long_name)
    assert not unexpected, "\n".join(unexpected)
    settle()
    assert cluster.list("swiftdiffusion.io/v1alpha1", "t2iworkflows") == []
    assert cluster.children() == []


def test_deleted_children_are_recreated(operator: LocalOperator, cluster: Cluster) -> None:
    cluster.apply_workflow(_workflow("wf", controlnets=[CANNY]))
    cluster.wait_ready("wf")
    for version, kind, name in (("apps/v1", "Deployment", "swd-wf-base"), ("v1", "Service", "swd-wf-cn"),
                                ("v1", "ConfigMap", "swd-wf-base"), ("policy/v1", "PodDisruptionBudget", "swd-wf-cn")):
        old = cluster.get(version, kind, name)
        kube.request(cluster.api, "DELETE", kube.object_path(version, kind, cluster.namespace, name))
        wait_until(lambda: (new := cluster.get(version, kind, name)) and new["metadata"]["uid"] != old["metadata"]["uid"])
    cluster.wait_ready("wf")


def _edit_deployment(cluster: Cluster, name: str, patch: dict[str, Any]) -> None:
    path = kube.object_path("apps/v1", "Deployment", cluster.namespace, name)
    kube.request(cluster.api, "PATCH", path, body=patch, content_type="application/strategic-merge-patch+json")


def test_hand_edited_child_is_put_back_but_autoscaled_replicas_are_left_alone(
        operator: LocalOperator, cluster: Cluster) -> None:
    cluster.apply_workflow(_workflow("wf", basePool={"autoscaling": {"enabled": True, "maxReplicas": 4}}))
    cluster.wait_ready("wf")
    _edit_deployment(cluster, "swd-wf-base", {"spec": {"replicas": 3}})  # what an autoscaler does
    _edit_deployment(cluster, "swd-wf-base", {"spec": {"template": {"spec": {"containers": [
        {"name": "runtime", "image": "someone/else:latest"}]}}}})

    def restored() -> bool:
        pod = cluster.get("apps/v1", "Deployment", "swd-wf-base")["spec"]["template"]["spec"]
        return pod["containers"][0]["image"] == "swiftdiffusion/runtime:0.1.0"

    wait_until(restored)
    settle()
    deployment = cluster.get("apps/v1", "Deployment", "swd-wf-base")
    assert deployment["spec"]["replicas"] == 3
    assert cluster.wait_ready("wf")["status"]["basePool"]["desiredReplicas"] == 3

    path = kube.object_path("v1", "ConfigMap", cluster.namespace, "swd-wf-base")
    kube.request(cluster.api, "PATCH", path, body={"data": {"config.yaml": "role: hacked\n"}},
                 content_type="application/merge-patch+json")
    wait_until(lambda: cluster.get("v1", "ConfigMap", "swd-wf-base")["data"]["config.yaml"].startswith("role: base"))


def test_spec_update_rolls_the_pools(operator: LocalOperator, cluster: Cluster) -> None:
    cluster.apply_workflow(_workflow("wf", controlnets=[CANNY]))
    cluster.wait_ready("wf")
    before = {pool: cluster.get("apps/v1", "Deployment", pool) for pool in ("swd-wf-base", "swd-wf-cn")}
    cluster.apply_workflow(_workflow("wf", base={"model": BASE_MODEL, "defaults": {"steps": 40}},
                                     controlnets=[{**CANNY, "conditioningScale": 0.9}]))
    body = cluster.wait_ready("wf")
    assert body["status"]["observedGeneration"] == 2
    for pool, old in before.items():
        new = cluster.get("apps/v1", "Deployment", pool)
        annotation = ("spec", "template", "metadata", "annotations")
        old_hash, new_hash = old, new
        for key in annotation:
            old_hash, new_hash = old_hash[key], new_hash[key]
        assert old_hash[render.CONFIG_HASH] != new_hash[render.CONFIG_HASH], pool
        assert new["metadata"]["generation"] > old["metadata"]["generation"]
        assert len(cluster.list("apps/v1", "replicasets", f"swiftdiffusion.io/pool={pool}")) == 2
    assert "steps: 40" in cluster.get("v1", "ConfigMap", "swd-wf-base")["data"]["config.yaml"]
    assert "conditioningScale: 0.9" in cluster.get("v1", "ConfigMap", "swd-wf-cn")["data"]["config.yaml"]


def _served(cluster: Cluster) -> str:
    return cluster.get("apps/v1", "Deployment", "swd-cn-shared")["metadata"]["annotations"][render.SERVED_CONTROLNETS]


def test_shared_pool_serves_the_union_and_lives_until_the_last_workflow_is_deleted(
        operator: LocalOperator, cluster: Cluster) -> None:
    shared = {"sharedPoolName": "shared"}
    cluster.apply_workflow(_workflow("a", controlnets=[CANNY], controlnetPool=shared))
    cluster.apply_workflow(_workflow("b", controlnets=[DEPTH], controlnetPool=shared))
    for name in ("a", "b"):
        cluster.wait_ready(name)
    wait_until(lambda: _served(cluster) == "canny,depth")
    deployments = cluster.list("apps/v1", "deployments", "swiftdiffusion.io/shared-pool=shared")
    assert len(deployments) == 1
    assert {o["name"] for o in deployments[0]["metadata"]["ownerReferences"]} == {"a", "b"}
    assert "swd-cn-shared.{}.svc:50051".format(cluster.namespace) in \
        cluster.get("v1", "ConfigMap", "swd-a-base")["data"]["config.yaml"]

    cluster.delete_workflow("a")
    wait_until(lambda: _served(cluster) == "depth")
    wait_until(lambda: {o["name"] for o in cluster.get("apps/v1", "Deployment", "swd-cn-shared")
                        ["metadata"]["ownerReferences"]} == {"b"})
    assert cluster.get("v1", "Service", "swd-cn-shared") is not None
    # b's status follows the pool: the pool's change queues its members, so it comes after
    wait_until(lambda: cluster.workflow("b")["status"]["controlnetPool"]["controlnets"] == ["depth"])

    cluster.delete_workflow("b")
    wait_until(lambda: cluster.children() == [], timeout=90)


def test_a_shared_pool_member_with_another_dtype_is_told_so(operator: LocalOperator, cluster: Cluster) -> None:
    shared = {"controlnets": [CANNY], "controlnetPool": {"sharedPoolName": "p"}}
    cluster.apply_workflow(_workflow("first", **shared))
    cluster.wait_ready("first")
    cluster.apply_workflow(_workflow("second", base={"model": BASE_MODEL, "dtype": "float32"}, **shared))
    wait_until(lambda: cluster.condition("second", "Degraded").get("reason") == "SharedPoolMismatch")
    message = cluster.condition("second", "Degraded")["message"]
    assert "swd-cn-p runs its ControlNets in float16" in message and "base model in float32" in message
    assert cluster.condition("first", "Degraded")["status"] == "False"


def test_pools_a_workflow_stops_using_are_deleted_while_it_lives(operator: LocalOperator, cluster: Cluster) -> None:
    cluster.apply_workflow(_workflow("wf", controlnets=[CANNY], controlnetPool={"sharedPoolName": "old"}))
    cluster.wait_ready("wf")
    assert cluster.get("apps/v1", "Deployment", "swd-cn-old") is not None

    cluster.apply_workflow(_workflow("wf", controlnets=[CANNY]))  # leaves the shared pool: a dedicated one
    wait_until(lambda: cluster.get("apps/v1", "Deployment", "swd-wf-cn") is not None)
    wait_until(lambda: not [c for c in cluster.children() if c["metadata"]["name"] == "swd-cn-old"])
    assert cluster.wait_ready("wf")["status"]["controlnetPool"]["name"] == "swd-wf-cn"

    cluster.apply_workflow(_workflow("wf"))  # no ControlNets any more
    wait_until(lambda: {c["metadata"]["name"] for c in cluster.children()} == {"swd-wf-base"})
    assert "controlnetPool" not in cluster.wait_ready("wf")["status"]


def _operator_events(cluster: Cluster) -> int:
    return sum(1 for e in cluster.list("v1", "events") if e.get("reportingComponent") == render.FIELD_MANAGER)


def _snapshot(cluster: Cluster) -> dict[str, str]:
    """What only the operator writes: workflows (status), ConfigMaps and Services by resourceVersion;
    Deployments and PDBs by generation (controllers write their status, never their spec)."""
    workflows = {f"t2iworkflows/{o['metadata']['name']}": o["metadata"]["resourceVersion"]
                 for o in cluster.list("swiftdiffusion.io/v1alpha1", "t2iworkflows")}
    children = {o["ref"]: str(o["metadata"].get("generation") or o["metadata"]["resourceVersion"])
                for o in cluster.children()}
    return {**workflows, **children}


def test_operator_restart_creates_no_duplicates_and_writes_nothing(
        operator: LocalOperator, cluster: Cluster) -> None:
    for doc in example("shared-pool") + [_workflow("solo", controlnets=[CANNY])]:
        cluster.apply_workflow(doc)
    for name in ("product-shots", "character-poses", "solo"):
        cluster.wait_ready(name)
    settle(3)  # let Deployment status updates and their echo reconciles finish
    operator.stop()
    before = _snapshot(cluster)
    events_before = _operator_events(cluster)
    assert events_before > 0  # the first reconciles did report what they applied

    operator.start()
    # Every workflow, the shared pool and every child is seen again, and reconciled.
    wait_until(lambda: operator.total("swiftdiffusion_operator_reconciles_total") >= 4)
    settle(3)
    assert operator.total("swiftdiffusion_operator_reconcile_errors_total") == 0
    assert operator.total("swiftdiffusion_operator_api_writes_total") == 0
    assert _snapshot(cluster) == before
    assert _operator_events(cluster) == events_before
    assert len(cluster.list("apps/v1", "deployments")) == 5  # 3 base pools, 1 dedicated and 1 shared pool


def test_operator_killed_mid_reconcile_converges_without_duplicates(
        operator: LocalOperator, cluster: Cluster) -> None:
    operator.stop()
    for i in range(3):
        cluster.apply_workflow(_workflow(f"wf{i}", controlnets=[CANNY, DEPTH]))
    operator.start()
    wait_until(lambda: cluster.children(), timeout=30)
    operator.stop(signal.SIGKILL)
    operator.start()
    for i in range(3):
        cluster.wait_ready(f"wf{i}")
    names = [o["ref"] for o in cluster.children()]
    assert len(names) == len(set(names)) == 3 * 2 * len(render.POOL_KINDS)  # base and ControlNet pool each


def test_unschedulable_pool_reports_the_schedulers_reason(operator: LocalOperator, cluster: Cluster) -> None:
    cluster.apply_workflow(_workflow("wf", basePool={"gpuProducts": ["NVIDIA-A100-SXM4-80GB"]}))
    wait_until(lambda: cluster.condition("wf").get("reason") == "Unschedulable")
    ready, degraded = cluster.condition("wf"), cluster.condition("wf", "Degraded")
    assert ready["status"] == "False"
    assert ready["message"].startswith("base pool swd-wf-base: 1 of 1 pods: unschedulable: 0/")
    assert "node affinity" in ready["message"], "the scheduler's own words"
    assert degraded["status"] == "True" and degraded["reason"] == "Unschedulable"
    columns, rows = cluster.table()
    assert rows["wf"][columns.index("Reason")] == "Unschedulable", "kubectl get t2i shows the reason"
    warnings = [e for e in cluster.list("v1", "events") if e["reason"] == "Unschedulable"]
    # One per distinct cause: the scheduler may reword its reason between attempts.
    assert warnings and all(w["type"] == "Warning" and "unschedulable" in w["message"] for w in warnings)
    pods = cluster.pods("swd-wf-base")
    assert pods and all(not p["spec"].get("nodeName") for p in pods)


def test_pod_status_problems_reach_the_ready_condition(operator: LocalOperator, cluster: Cluster) -> None:
    """A kubelet reports image pulls and crash loops in pod status; the test writes that status
    the way a kubelet would (kwok's fake nodes run no containers) and the operator names it."""
    cluster.apply_workflow(_workflow("wf"))
    cluster.wait_ready("wf")
    cluster.apply_workflow(_workflow("wf", image="registry.invalid/runtime:none"))
    wait_until(lambda: [p for p in cluster.pods("swd-wf-base") if p["spec"]["containers"][0]["image"].startswith(
        "registry.invalid") and p["spec"].get("nodeName")])
    pod = next(p for p in cluster.pods("swd-wf-base") if p["spec"]["containers"][0]["image"].startswith("registry"))
    name = pod["metadata"]["name"]
    cases = (({"reason": "ImagePullBackOff", "message": "Back-off pulling image"}, "ImagePullFailed",
              "cannot pull image registry.invalid/runtime:none: ImagePullBackOff (Back-off pulling image)"),
             ({"reason": "CrashLoopBackOff", "message": "back-off 5m0s"}, "CrashLooping",
              "container runtime is crash looping after 3 restarts"))
    for waiting, reason, words in cases:
        status = {"phase": "Running", "conditions": [{"type": "PodScheduled", "status": "True"},
                                                     {"type": "Ready", "status": "False"}],
                  "containerStatuses": [{"name": "runtime", "image": "registry.invalid/runtime:none", "ready": False,
                                         "restartCount": 3, "imageID": "", "state": {"waiting": waiting}}]}
        kube.request(cluster.api, "PATCH", f"/api/v1/namespaces/{cluster.namespace}/pods/{name}/status",
                     body={"status": status}, content_type="application/strategic-merge-patch+json")
        wait_until(lambda reason=reason: cluster.condition("wf").get("reason") == reason, timeout=40)
        assert words in cluster.condition("wf")["message"]


def test_refused_child_is_reported_as_one_readable_sentence(operator: LocalOperator, cluster: Cluster) -> None:
    """A foreign Deployment already holds the base pool's name: its selector is immutable,
    so the API server refuses the operator's apply."""
    foreign = {"app": "foreign"}
    kube.request(cluster.api, "POST", f"/apis/apps/v1/namespaces/{cluster.namespace}/deployments", body={
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "swd-wf-base"},
        "spec": {"replicas": 0, "selector": {"matchLabels": foreign}, "template": {
            "metadata": {"labels": foreign}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}})
    cluster.apply_workflow(_workflow("wf"))
    wait_until(lambda: cluster.condition("wf").get("reason") == "ReconcileFailed")
    message = cluster.condition("wf")["message"]
    assert message.startswith("applying children failed: Deployment swd-wf-base refused (Invalid): ")
    assert "spec.selector" in message and "immutable" in message
    assert '"kind"' not in message and "causes" not in message and len(message) <= 430, "no raw Status body"
    assert cluster.condition("wf", "Degraded")["message"] == message


def test_operator_serves_liveness_and_prometheus_metrics(operator: LocalOperator, cluster: Cluster) -> None:
    cluster.apply_workflow(_workflow("wf"))
    cluster.wait_ready("wf")
    metrics = operator.metrics()  # parses as Prometheus text
    assert operator.total("swiftdiffusion_operator_reconciles_total") >= 1
    assert any(k.startswith("swiftdiffusion_operator_reconcile_duration_seconds_bucket") for k in metrics)
    assert operator.total("swiftdiffusion_operator_api_writes_total") >= 5  # 4 children + status
    assert metrics["swiftdiffusion_operator_reconcile_errors_total{kind=shared-pool,retried=false}"] == 0, \
        "every error series exists at 0 before its first error, so rate() and alerts see that first one"


def _allowed(cluster: Cluster, verb: str, group: str, resource: str) -> bool:
    review = kube.request(cluster.api, "POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", body={
        "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "spec": {"user": f"system:serviceaccount:{cluster.namespace}:{rbac.NAME}",
                 "groups": ["system:serviceaccounts", f"system:serviceaccounts:{cluster.namespace}"],
                 "resourceAttributes": {"namespace": cluster.namespace, "verb": verb, "group": group,
                                        "resource": resource}}})
    return review["status"].get("allowed", False)


def test_operator_service_account_is_least_privilege(operator: LocalOperator, cluster: Cluster) -> None:
    """The operator works under the generated rules (every test here runs it so) and they grant no more."""
    assert _allowed(cluster, "patch", "apps", "deployments")
    assert _allowed(cluster, "patch", "swiftdiffusion.io", "t2iworkflows/status")
    for verb, group, resource in (("update", "apps", "deployments"), ("get", "", "secrets"),
                                  ("patch", "swiftdiffusion.io", "t2iworkflows"), ("create", "", "pods"),
                                  ("delete", "", "pods"), ("watch", "", "pods"),
                                  ("delete", "swiftdiffusion.io", "t2iworkflows")):
        assert not _allowed(cluster, verb, group, resource), (verb, group, resource)
