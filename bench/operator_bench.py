"""Operator benchmark on the Kubernetes test bed (not a timed test).

Reports:
  * seconds from apply to Ready=True for 1 workflow, and for N workflows applied at once;
  * API write calls per reconcile of an unchanged workflow, measured over an operator
    restart (every workflow is reconciled again): the operator's own write counter and
    the API server's request counters, next to a baseline that re-applies every child with
    server-side apply (the usual way to stay level-based, whose PATCHes change nothing);
  * the operator process's peak resident memory with N workflows.

Each workflow has a base pool and one ControlNet served by a shared pool (one per 10
workflows, as ControlNet-as-a-service intends; it also keeps the Services within the
test bed's /24 service range). The bench registers enough extra fake H800 nodes for all
pods and removes them after.

    .venv/bin/python bench/operator_bench.py --workflows 200          # starts its own test bed
    .venv/bin/python bench/operator_bench.py --kubeconfig ~/.kube/config --workflows 200
"""
from __future__ import annotations

import argparse
import json
import math
import pathlib
import re
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kubernetes import config

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from swiftdiffusion.operator import crd, kube, render  # noqa: E402
from swiftdiffusion.operator import model as m  # noqa: E402
from tests.reconcile.fixtures import WORKFLOWS, Cluster, OperatorProcess, server_side_apply  # noqa: E402
from tests.testbed import nodes  # noqa: E402
from tests.testbed.waiting import eventually  # noqa: E402

WRITE_VERBS = ("POST", "PUT", "PATCH", "APPLY", "DELETE")
WORKFLOWS_PER_SHARED_POOL = 10
OUR_RESOURCES = ("deployments", "services", "configmaps", "poddisruptionbudgets", "t2iworkflows", "events")


def workflow(name: str, index: int) -> dict[str, Any]:
    """A base pool plus a ControlNet in one of the shared pools (WORKFLOWS_PER_SHARED_POOL each)."""
    return {"apiVersion": f"{m.GROUP}/{m.VERSION}", "kind": m.KIND, "metadata": {"name": name},
            "spec": {"base": {"model": "stabilityai/stable-diffusion-xl-base-1.0"},
                     "controlnets": [{"name": f"canny-{index % 3}", "model": "diffusers/controlnet-canny-sdxl-1.0"}],
                     "loras": [{"name": "pixel-art", "source": "/models/loras/pixel-art.safetensors", "k": 8}],
                     "controlnetPool": {"sharedPoolName": f"pool-{index // WORKFLOWS_PER_SHARED_POOL}"}}}


def apiserver_writes(cluster: Cluster) -> float:
    """Sum of apiserver_request_total for write verbs on the operator's resources."""
    serialized = cluster.api.param_serialize(method="GET", resource_path="/metrics",
                                             header_params={"Accept": "text/plain"}, auth_settings=["BearerToken"])
    response = cluster.api.call_api(*serialized)
    response.read()
    total = 0.0
    for line in response.data.decode().splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
        if labels.get("verb") in WRITE_VERBS and labels.get("resource") in OUR_RESOURCES:
            total += float(line.rsplit(" ", 1)[1])
    return total


def peak_rss_mib(process: OperatorProcess) -> float:
    status = pathlib.Path(f"/proc/{process.process.pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024


def ready_count(cluster: Cluster) -> int:
    items = kube.request(cluster.api, "GET", WORKFLOWS.format(ns=cluster.namespace))["items"]
    return sum(1 for wf in items
               for c in wf.get("status", {}).get("conditions", [])
               if c["type"] == "Ready" and c["status"] == "True"
               and wf["status"].get("observedGeneration") == wf["metadata"]["generation"])


def base_deployments(cluster: Cluster) -> int:
    return len(cluster.list("apps/v1", "deployments", "app.kubernetes.io/component=base-pool"))


def apply_all(cluster: Cluster, names: dict[str, int]) -> tuple[float, float]:
    """Applies the workflows at once (8 clients in parallel).

    Returns seconds until every base pool Deployment exists (the operator's share) and
    until every workflow is Ready (adds the scheduler, controllers and kwok's fake kubelet).
    """
    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda item: cluster.apply_workflow(workflow(*item)), names.items()))
    eventually(lambda: base_deployments(cluster) >= len(names), timeout=1800, interval=0.5)
    children = time.monotonic() - started
    eventually(lambda: ready_count(cluster) >= len(names), timeout=1800, interval=0.5)
    return children, time.monotonic() - started


def add_gpu_nodes(cluster: Cluster, count: int) -> list[str]:
    pool = nodes.GpuPool("bench-h800", "NVIDIA-H800", count)
    created = []
    for node in nodes.gpu_nodes((pool,)):
        kube.request(cluster.api, "POST", "/api/v1/nodes", body=node)
        created.append(node["metadata"]["name"])
    eventually(lambda: all(nodes.is_ready(cluster.node(n)) for n in created), timeout=300, interval=1)
    return created


def revisions(cluster: Cluster) -> dict[str, str]:
    """resourceVersion of every workflow and every child: any write to them changes it."""
    workflows = {f"t2iworkflows/{o['metadata']['name']}": o["metadata"]["resourceVersion"]
                 for o in cluster.list(f"{m.GROUP}/{m.VERSION}", m.PLURAL)}
    return {**workflows, **{o["ref"]: o["metadata"]["resourceVersion"] for o in cluster.children()}}


def count_changed(before: dict[str, str], after: dict[str, str]) -> int:
    return sum(1 for key in before.keys() | after.keys() if before.get(key) != after.get(key))


def baseline_reapply(cluster: Cluster, names: list[str]) -> tuple[float, int]:
    """The usual level-based loop: server-side apply every child again. Returns (writes, changed objects)."""
    before_writes = apiserver_writes(cluster)
    before = revisions(cluster)
    workflows = [m.Workflow.from_body(cluster.workflow(name)) for name in names]
    manifests = [x for wf in workflows for x in render.render_workflow(wf)]
    pools = sorted({wf.shared_pool for wf in workflows if wf.shared_pool})
    manifests += [x for pool in pools for x in render.render_shared_pool(pool, [
        wf for wf in workflows if wf.shared_pool == pool])]
    for manifest in manifests:
        kube.apply(cluster.api, manifest)
    return apiserver_writes(cluster) - before_writes, count_changed(before, revisions(cluster))


def run(kubeconfig: str, count: int, workdir: pathlib.Path) -> dict[str, Any]:
    api = config.new_client_from_config(config_file=kubeconfig)
    namespace = f"swd-bench-{uuid.uuid4().hex[:6]}"
    kube.request(api, "POST", "/api/v1/namespaces", body={"apiVersion": "v1", "kind": "Namespace",
                                                          "metadata": {"name": namespace}})
    cluster = Cluster(api, namespace)
    definition = crd.crd()
    server_side_apply(api, f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{definition['metadata']['name']}",
                      definition)
    eventually(lambda: kube.request(api, "GET", WORKFLOWS.format(ns=namespace)), timeout=60)
    pods = count + 1 + math.ceil(count / WORKFLOWS_PER_SHARED_POOL) + 1
    extra_nodes = add_gpu_nodes(cluster, math.ceil(pods / 8))
    operator = OperatorProcess(namespace, kubeconfig, workdir / "operator.log").start()
    results: dict[str, Any] = {"workflows": count}
    try:
        single = {"single": 0}
        _, results["seconds_to_ready_1"] = apply_all(cluster, single)
        names = {**single, **{f"wf-{i:03d}": i for i in range(count)}}
        results[f"seconds_to_children_{count}"], results[f"seconds_to_ready_{count}"] = apply_all(cluster, names)
        results["operator_peak_rss_mib"] = round(peak_rss_mib(operator), 1)

        time.sleep(5)  # let Deployment status echoes settle
        operator.stop()
        writes_before, objects_before = apiserver_writes(cluster), revisions(cluster)
        operator.start()
        expected = count + 1 + math.ceil(count / WORKFLOWS_PER_SHARED_POOL)
        eventually(lambda: operator.total("swiftdiffusion_operator_reconciles_total") >= expected
                   and operator.total("swiftdiffusion_operator_queue_depth") == 0, timeout=600, interval=0.5)
        time.sleep(5)
        reconciles = operator.total("swiftdiffusion_operator_reconciles_total")
        results["restart_reconciles"] = int(reconciles)
        results["operator_writes_per_unchanged_reconcile"] = operator.total(
            "swiftdiffusion_operator_api_writes_total") / reconciles
        results["apiserver_writes_during_restart"] = apiserver_writes(cluster) - writes_before  # any client
        results["objects_changed_during_restart"] = count_changed(objects_before, revisions(cluster))
        results["operator_peak_rss_mib_after_restart"] = round(peak_rss_mib(operator), 1)
        operator.stop()
        writes, changed = baseline_reapply(cluster, list(names))
        results["baseline_ssa_reapply_writes_per_reconcile"] = writes / expected
        results["baseline_ssa_reapply_objects_changed"] = changed
    finally:
        operator.stop()
        kube.request(api, "DELETE", f"/api/v1/namespaces/{namespace}")
        for name in extra_nodes:
            kube.request(api, "DELETE", f"/api/v1/nodes/{name}")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workflows", type=int, default=200)
    parser.add_argument("--kubeconfig", help="an existing cluster (default: start a private test bed)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="operator-bench-") as tmp:
        workdir = pathlib.Path(tmp)
        if args.kubeconfig:
            results = run(args.kubeconfig, args.workflows, workdir)
        else:
            from tests.testbed.cluster import TestBed
            bed = TestBed(workdir / "testbed")
            try:
                results = run(str(bed.up(tied_to_parent=True)), args.workflows, workdir)
            finally:
                bed.down()
    print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in results.items()}, indent=2))


if __name__ == "__main__":
    main()
