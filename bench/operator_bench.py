"""Operator benchmark on a Kubernetes cluster: the private test bed by default (not a timed test).

Per round, in a fresh namespace with a fresh operator process:
  * seconds from apply to Ready=True for 1 workflow, then for N more applied at once, and
    until every base-pool Deployment exists (the operator's share of that time);
  * API writes per reconcile of an unchanged workflow, measured over an operator restart
    (every workflow is reconciled again): the operator's own write counter and the API
    server's request counters, next to a baseline that re-applies every child with
    server-side apply (the usual way to stay level-based, whose PATCHes change nothing);
  * the operator process's peak resident memory with the N + 1 workflows.
The namespace is deleted, and gone, before the next round starts, so rounds do not overlap.

Each workflow has a base pool (4 children, one GPU pod) and one ControlNet served by a
shared ControlNet pool, one pool per 10 workflows (4 children, one GPU pod each), as
ControlNet-as-a-service intends; it also keeps the Services within the test bed's /24
service range. The bench clones the cluster's fake (kwok) H800 node until every pod has a
GPU, and removes the clones after.

Method (bench/harness.py): one untimed warm-up round, identical to the timed ones, then
--repeats timed rounds; medians with min-max spread.

    .venv/bin/python bench/operator_bench.py                          # 200 workflows, private test bed
    .venv/bin/python bench/operator_bench.py --kubeconfig "$KUBECONFIG"
    .venv/bin/python bench/operator_bench.py --workflows 10 --repeats 1 --quick   # smoke
The private test bed is started and stopped with `scripts/testbed up|down` in a scratch
state directory, so a test bed already up (`make cluster-up`) is left alone.
"""
from __future__ import annotations

import argparse
import math
import os
import re
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import harness
from kubernetes import config
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from swiftdiffusion.operator import crd, kube, render
from swiftdiffusion.operator import model as m
from swiftdiffusion.operator.local_process import LocalOperator

T = TypeVar("T")
WORKFLOWS_PER_SHARED_POOL = 10
MANAGER = "swiftdiffusion-bench"
WRITE_VERBS = ("POST", "PUT", "PATCH", "APPLY", "DELETE")
OUR_RESOURCES = ("deployments", "services", "configmaps", "poddisruptionbudgets", "t2iworkflows", "events")
FAKE_H800 = "nvidia.com/gpu.product=NVIDIA-H800,type=kwok"


def wait_until(check: Callable[[], T], timeout: float, interval: float = 0.5) -> T:
    """Polls until `check` returns something truthy; API errors on the way count as not yet."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if result := check():
                return result
        except (ApiException, OSError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"not true after {timeout:.0f} s: {getattr(check, '__name__', check)}")
        time.sleep(interval)


def workflow(name: str, index: int) -> dict[str, Any]:
    """A base pool plus a ControlNet in one of the shared pools (WORKFLOWS_PER_SHARED_POOL each)."""
    return {"apiVersion": f"{m.GROUP}/{m.VERSION}", "kind": m.KIND, "metadata": {"name": name},
            "spec": {"base": {"model": "stabilityai/stable-diffusion-xl-base-1.0"},
                     "controlnets": [{"name": f"canny-{index % 3}", "model": "diffusers/controlnet-canny-sdxl-1.0"}],
                     "loras": [{"name": "pixel-art", "source": "/models/loras/pixel-art.safetensors", "k": 8}],
                     "controlnetPool": {"sharedPoolName": f"pool-{index // WORKFLOWS_PER_SHARED_POOL}"}}}


def workflows_path(namespace: str) -> str:
    return kube.collection_path(f"{m.GROUP}/{m.VERSION}", m.KIND, namespace)


def server_side_apply(api: ApiClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """As `kubectl apply --server-side` or a GitOps tool does."""
    return kube.request(api, "PATCH", path, body=body, query={"fieldManager": MANAGER, "force": "true"},
                        content_type="application/apply-patch+yaml")


def list_items(api: ApiClient, path: str, selector: str = "") -> list[dict[str, Any]]:
    return kube.request(api, "GET", path, query={"labelSelector": selector} if selector else None)["items"]


def apiserver_writes(api: ApiClient) -> float:
    """Sum of apiserver_request_total for write verbs on the operator's resources (any client)."""
    serialized = api.param_serialize(method="GET", resource_path="/metrics", header_params={"Accept": "text/plain"},
                                     auth_settings=["BearerToken"])
    response = api.call_api(*serialized)
    response.read()
    total = 0.0
    for line in response.data.decode().splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
        if labels.get("verb") in WRITE_VERBS and labels.get("resource") in OUR_RESOURCES:
            total += float(line.rsplit(" ", 1)[1])
    return total


def ready_count(api: ApiClient, namespace: str) -> int:
    """Workflows whose Ready condition is True at their current generation."""
    return sum(1 for wf in list_items(api, workflows_path(namespace))
               for c in wf.get("status", {}).get("conditions", [])
               if c["type"] == "Ready" and c["status"] == "True"
               and wf["status"].get("observedGeneration") == wf["metadata"]["generation"])


def apply_all(api: ApiClient, namespace: str, names: dict[str, int]) -> tuple[float, float]:
    """Applies the workflows at once (8 clients in parallel).

    Returns seconds until every base pool Deployment exists (the operator's share) and
    until every workflow is Ready (adds the scheduler, controllers and kwok's fake kubelet).
    """
    def apply(item: tuple[str, int]) -> None:
        body = workflow(*item)
        body["metadata"]["namespace"] = namespace
        server_side_apply(api, f"{workflows_path(namespace)}/{item[0]}", body)

    deployments = kube.collection_path("apps/v1", "Deployment", namespace)
    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(apply, names.items()))
    wait_until(lambda: len(list_items(api, deployments, "app.kubernetes.io/component=base-pool")) >= len(names), 1800)
    children = time.monotonic() - started
    wait_until(lambda: ready_count(api, namespace) >= len(names), 1800)
    return children, time.monotonic() - started


def revisions(api: ApiClient, namespace: str) -> dict[str, str]:
    """resourceVersion of every workflow and every child: any write to them changes it."""
    objects = {f"t2iworkflows/{o['metadata']['name']}": o["metadata"]["resourceVersion"]
               for o in list_items(api, workflows_path(namespace))}
    for version, kind in render.POOL_KINDS:
        for o in list_items(api, kube.collection_path(version, kind, namespace),
                            "app.kubernetes.io/managed-by=swiftdiffusion-operator"):
            objects[f"{kube.PLURALS[kind]}/{o['metadata']['name']}"] = o["metadata"]["resourceVersion"]
    return objects


def count_changed(before: dict[str, str], after: dict[str, str]) -> int:
    return sum(1 for key in before.keys() | after.keys() if before.get(key) != after.get(key))


def baseline_reapply(api: ApiClient, namespace: str, names: list[str]) -> tuple[float, int]:
    """The usual level-based loop: server-side apply every child again. Returns (writes, changed objects)."""
    before_writes, before = apiserver_writes(api), revisions(api, namespace)
    workflows = [m.Workflow.from_body(kube.request(api, "GET", f"{workflows_path(namespace)}/{name}"))
                 for name in names]
    manifests = [x for wf in workflows for x in render.render_workflow(wf)]
    for pool in sorted({wf.shared_pool for wf in workflows if wf.shared_pool}):
        manifests += render.render_shared_pool(pool, [wf for wf in workflows if wf.shared_pool == pool])
    for manifest in manifests:
        kube.apply(api, manifest)
    return apiserver_writes(api) - before_writes, count_changed(before, revisions(api, namespace))


def restart(api: ApiClient, namespace: str, operator: LocalOperator, expected: int) -> harness.Measurement:
    """Restarts the operator over unchanged workflows and counts what its reconciles wrote."""
    time.sleep(5)  # let Deployment status echoes settle
    operator.stop()
    writes_before, objects_before = apiserver_writes(api), revisions(api, namespace)
    operator.start()
    wait_until(lambda: operator.total("swiftdiffusion_operator_reconciles_total") >= expected
               and operator.total("swiftdiffusion_operator_queue_depth") == 0, timeout=600)
    time.sleep(5)
    reconciles = operator.total("swiftdiffusion_operator_reconciles_total")
    return {
        "restart_reconciles": reconciles,
        "operator_writes_per_unchanged_reconcile":
            operator.total("swiftdiffusion_operator_api_writes_total") / reconciles,
        "apiserver_writes_during_restart": apiserver_writes(api) - writes_before,
        "objects_changed_during_restart": count_changed(objects_before, revisions(api, namespace)),
        "operator_peak_rss_mib_after_restart": operator.peak_rss_mib(),
    }


def one_round(api: ApiClient, kubeconfig: str, count: int, workdir: Path) -> harness.Measurement:
    """Everything measured in a fresh namespace with a fresh operator; the namespace is gone on return."""
    namespace = f"swd-bench-{uuid.uuid4().hex[:6]}"
    kube.request(api, "POST", "/api/v1/namespaces",
                 body={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    operator = LocalOperator(namespace, kubeconfig, workdir / f"operator-{namespace}.log")
    try:
        operator.start()
        single = {"single": 0}
        _, ready_one = apply_all(api, namespace, single)
        names = {**single, **{f"wf-{i:03d}": i for i in range(count)}}
        children, ready_all = apply_all(api, namespace, names)
        results = {"wall": ready_all, "seconds_to_ready_1": ready_one, "seconds_to_children_all": children,
                   "operator_peak_rss_mib": operator.peak_rss_mib()}
        reconciled = len(names) + math.ceil(count / WORKFLOWS_PER_SHARED_POOL)  # workflows and shared pools
        results |= restart(api, namespace, operator, reconciled)
        operator.stop()
        writes, changed = baseline_reapply(api, namespace, list(names))
        return results | {"baseline_ssa_writes_per_reconcile": writes / reconciled,
                          "baseline_ssa_objects_changed": changed}
    finally:
        operator.stop()
        kube.request(api, "DELETE", f"/api/v1/namespaces/{namespace}")
        wait_until(lambda: namespace_gone(api, namespace), timeout=900, interval=1)


def namespace_gone(api: ApiClient, namespace: str) -> bool:
    try:
        kube.request(api, "GET", f"/api/v1/namespaces/{namespace}")
    except ApiException as error:
        if error.status == 404:
            return True
        raise
    return False


def node_ready(node: dict[str, Any]) -> bool:
    """Ready, and the node lifecycle controller has lifted its not-ready taints."""
    taints = [t for t in node["spec"].get("taints", []) if t["key"].startswith("node.kubernetes.io/")]
    return not taints and any(c["type"] == "Ready" and c["status"] == "True"
                              for c in node.get("status", {}).get("conditions", []))


def add_gpu_nodes(api: ApiClient, pods: int) -> list[str]:
    """Clones of the cluster's fake (kwok) H800 node until `pods` one-GPU pods fit on the clones alone."""
    templates = list_items(api, "/api/v1/nodes", FAKE_H800)
    if not templates:
        harness.log(f"no fake H800 node ({FAKE_H800}) to clone: the cluster must have GPUs for {pods} pods")
        return []
    template = templates[0]
    gpus = int(template["status"]["allocatable"]["nvidia.com/gpu"])
    names = [f"swd-bench-h800-{i}" for i in range(math.ceil(pods / gpus))]
    for name in names:
        kube.request(api, "POST", "/api/v1/nodes", body=clone_node(template, name))
    wait_until(lambda: all(node_ready(kube.request(api, "GET", f"/api/v1/nodes/{n}")) for n in names), timeout=300)
    return names


def clone_node(template: dict[str, Any], name: str) -> dict[str, Any]:
    meta = template["metadata"]
    taints = [t for t in template["spec"].get("taints", []) if not t["key"].startswith("node.kubernetes.io/")]
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "annotations": meta.get("annotations", {}),
                         "labels": {**meta.get("labels", {}), "kubernetes.io/hostname": name}},
            "spec": {"taints": taints},
            "status": {key: template["status"][key] for key in ("capacity", "allocatable", "nodeInfo")}}


def install_crd(api: ApiClient) -> None:
    definition = crd.crd()
    server_side_apply(api, f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{definition['metadata']['name']}",
                      definition)
    wait_until(lambda: kube.request(api, "GET", workflows_path("default")), timeout=60)  # CRD established


@contextmanager
def private_testbed(state: Path) -> Iterator[str]:
    """`scripts/testbed up` in its own state directory; yields the admin kubeconfig; `down` after."""
    env = {**os.environ, "SWIFTDIFFUSION_TESTBED_DIR": str(state)}
    script = str(harness.REPO / "scripts" / "testbed")
    try:
        up = subprocess.run([script, "up"], env=env, check=True, stdout=subprocess.PIPE, text=True)
        yield up.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run([script, "down"], env=env, check=False)


@contextmanager
def cluster(kubeconfig: str | None, workdir: Path) -> Iterator[str]:
    if kubeconfig:
        yield kubeconfig
    else:
        with private_testbed(workdir / "testbed") as path:
            yield path


KEYS = (  # (measure, unit, digits)
    ("seconds_to_ready_1", "s", 2),
    ("seconds_to_children_all", "s", 1),
    ("wall", "s", 1),
    ("operator_peak_rss_mib", "MiB", 1),
    ("operator_peak_rss_mib_after_restart", "MiB", 1),
    ("restart_reconciles", "", 0),
    ("operator_writes_per_unchanged_reconcile", "", 2),
    ("apiserver_writes_during_restart", "", 0),
    ("objects_changed_during_restart", "", 0),
    ("baseline_ssa_writes_per_reconcile", "", 2),
    ("baseline_ssa_objects_changed", "", 0),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workflows", type=int, default=200)
    parser.add_argument("--kubeconfig", help="an existing cluster (default: start a private test bed)")
    harness.add_arguments(parser)
    args = parser.parse_args()
    harness.check_arguments(parser, args)
    start = harness.header(f"operator, 1 workflow then {args.workflows} more at once, "
                           f"{WORKFLOWS_PER_SHARED_POOL} per shared ControlNet pool; "
                           f"{args.repeats} rounds after one warm-up round")
    with tempfile.TemporaryDirectory(prefix="operator-bench-") as tmp, cluster(args.kubeconfig, Path(tmp)) as path:
        api = config.new_client_from_config(config_file=path)
        install_crd(api)
        pods = args.workflows + 1 + math.ceil(args.workflows / WORKFLOWS_PER_SHARED_POOL) + 1
        nodes = add_gpu_nodes(api, pods)
        try:
            runs = harness.interleave({"round": lambda: one_round(api, path, args.workflows, Path(tmp))},
                                      args.repeats)["round"]
        finally:
            for name in nodes:
                kube.request(api, "DELETE", f"/api/v1/nodes/{name}")
    results = {}
    for key, unit, digits in KEYS:
        value = harness.spread(harness.column(runs, key))
        label = f"seconds_to_ready_{args.workflows + 1}" if key == "wall" else key
        print(f"  {label:42s} {value.text(unit=unit, digits=digits)}")
        results[label] = value.as_json()
    harness.write_json(args.json, "operator", {"workflows": args.workflows, "repeats": args.repeats,
                                               "quick": args.quick}, start, results)


if __name__ == "__main__":
    main()
