"""Rendering a workflow into its pools, with no cluster: GPU pinning, config, sharing."""
from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
import yaml

from swiftdiffusion.operator import render
from tests.reconcile.workflows import CANNY, DEPTH, workflow


def _by_kind(manifests: list[dict[str, Any]], kind: str, suffix: str) -> dict[str, Any]:
    return next(x for x in manifests if x["kind"] == kind and x["metadata"]["name"].endswith(suffix))


def _config(manifests: list[dict[str, Any]], suffix: str) -> dict[str, Any]:
    return yaml.safe_load(_by_kind(manifests, "ConfigMap", suffix)["data"]["config.yaml"])


def test_workflow_without_controlnets_renders_only_the_base_pool() -> None:
    manifests = render.render_workflow(workflow())
    assert sorted(x["kind"] for x in manifests) == [
        "ConfigMap", "Deployment", "NetworkPolicy", "PodDisruptionBudget", "Service"]
    assert {x["metadata"]["name"] for x in manifests} == {"swd-wf-base"}


def test_pods_are_pinned_to_allowed_gpu_products_with_gpu_taint_toleration() -> None:
    pod = _by_kind(render.render_workflow(workflow()), "Deployment", "-base")["spec"]["template"]["spec"]
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms == [{"matchExpressions": [{"key": "nvidia.com/gpu.product", "operator": "In",
                                            "values": ["NVIDIA-H800"]}]}]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    container = pod["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]


def test_runtime_contract_command_ports_probes_and_config_mount() -> None:
    manifests = render.render_workflow(workflow(controlnets=[CANNY]))
    for suffix, role in (("-base", "serve-base"), ("-cn", "serve-controlnet")):
        container = _by_kind(manifests, "Deployment", suffix)["spec"]["template"]["spec"]["containers"][0]
        assert [container["command"][0], *container["args"]] == [
            "swiftdiffusion", role, "--config", "/etc/swiftdiffusion/config.yaml"]
        assert {(p["name"], p["containerPort"]) for p in container["ports"]} == {("grpc", 50051), ("metrics", 9400)}
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["grpc"] == {"port": 50051}
        assert {"name": "config", "mountPath": "/etc/swiftdiffusion", "readOnly": True} in container["volumeMounts"]
        service = _by_kind(manifests, "Service", suffix)
        assert {(p["name"], p["port"]) for p in service["spec"]["ports"]} == {("grpc", 50051), ("metrics", 9400)}


def test_with_a_cpu_limit_torch_threads_follow_it_and_without_one_torch_keeps_its_default() -> None:
    limited = workflow(controlnets=[CANNY], basePool={"resources": {"limits": {"cpu": "1500m"}}})
    manifests = render.render_workflow(limited)
    base, cn = (_by_kind(manifests, "Deployment", suffix)["spec"]["template"]["spec"]["containers"][0]
                for suffix in ("-base", "-cn"))
    assert {"name": "OMP_NUM_THREADS", "valueFrom": {"resourceFieldRef": {
        "containerName": base["name"], "resource": "limits.cpu", "divisor": "1"}}} in base["env"]
    assert "OMP_NUM_THREADS" not in {e["name"] for e in cn["env"]}


def test_latent_parallelism_asks_two_gpus_per_base_pod_and_sets_the_config_flag() -> None:
    wf = workflow(serving={"latentParallelism": "Enabled"}, basePool={"gpus": 2})
    manifests = render.render_workflow(wf)
    container = _by_kind(manifests, "Deployment", "-base")["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert _config(manifests, "-base")["base"]["latentParallelism"] is True


def test_base_config_follows_the_architecture_contract() -> None:
    wf = workflow(controlnets=[CANNY], loras=[{"name": "pixel", "source": "/m/p.safetensors", "scale": 0.8, "k": 8},
                                             {"name": "ink", "source": "/m/i.safetensors"}])
    config = _config(render.render_workflow(wf), "-base")
    assert config["role"] == "base" and config["grpcPort"] == 50051 and config["metricsPort"] == 9400
    assert config["base"]["controlnetService"] == "swd-wf-cn.ns.svc:50051"
    assert config["base"]["defaults"] == {"steps": 30, "guidanceScale": 5.0, "width": 1024, "height": 1024}
    assert config["base"]["loras"] == [{"name": "pixel", "source": "/m/p.safetensors", "scale": 0.8, "k": 8},
                                       {"name": "ink", "source": "/m/i.safetensors", "scale": 1.0}]
    assert config["controlnets"] == [CANNY]


def test_autoscaling_leaves_replicas_to_the_autoscaler() -> None:
    fixed = _by_kind(render.render_workflow(workflow(basePool={"replicas": 3})), "Deployment", "-base")
    scaled = _by_kind(render.render_workflow(workflow(basePool={"autoscaling": {"enabled": True, "maxReplicas": 4}})),
                      "Deployment", "-base")
    assert fixed["spec"]["replicas"] == 3
    assert "replicas" not in scaled["spec"]


def test_config_change_changes_pod_template_hash_and_nothing_else_does() -> None:
    def template_hash(**spec: Any) -> str:
        deployment = _by_kind(render.render_workflow(workflow(**spec)), "Deployment", "-base")
        return deployment["spec"]["template"]["metadata"]["annotations"][render.CONFIG_HASH]

    assert template_hash() == template_hash()
    assert template_hash() != template_hash(base={"model": "other/model"})


def test_shared_pool_serves_union_owned_by_every_member() -> None:
    a = workflow("a", created="2026-01-01T00:00:00Z", controlnets=[CANNY], controlnetPool={"sharedPoolName": "p"})
    b = workflow("b", created="2026-01-02T00:00:00Z", controlnets=[DEPTH, {**CANNY, "conditioningScale": 0.9}],
                 controlnetPool={"sharedPoolName": "p", "replicas": 5})
    assert all(x["metadata"]["name"] == "swd-a-base" for x in render.render_workflow(a))
    manifests = render.render_shared_pool("p", [b, a])
    deployment = _by_kind(manifests, "Deployment", "swd-cn-p")
    config = _config(manifests, "swd-cn-p")
    assert config["role"] == "controlnet"
    assert config["controlnets"] == [CANNY, DEPTH]  # a (oldest) defines canny
    assert deployment["spec"]["replicas"] == 1  # settings from the oldest member
    owners = deployment["metadata"]["ownerReferences"]
    assert {o["name"] for o in owners} == {"a", "b"}
    assert not any(o["controller"] for o in owners)
    base_config = _config(render.render_workflow(b), "-base")
    assert base_config["base"]["controlnetService"] == "swd-cn-p.ns.svc:50051"


def test_rendering_is_deterministic_and_stamped_with_its_content_hash() -> None:
    wf = workflow(controlnets=[CANNY])
    first, second = render.render_workflow(wf), render.render_workflow(wf)
    assert first == second
    assert all(render.APPLIED_HASH in x["metadata"]["annotations"] for x in first)
    changed = render.render_workflow(workflow(controlnets=[CANNY], basePool={"replicas": 2}))
    hashes = {x["metadata"]["annotations"][render.APPLIED_HASH] for x in first}
    assert _by_kind(changed, "Deployment", "-base")["metadata"]["annotations"][render.APPLIED_HASH] not in hashes


def test_model_store_volume_is_mounted_at_the_configured_path() -> None:
    wf = workflow(modelStore={"type": "PersistentVolumeClaim", "claimName": "models", "path": "/weights"})
    manifests = render.render_workflow(wf)
    pod = _by_kind(manifests, "Deployment", "-base")["spec"]["template"]["spec"]
    assert {"name": "models", "persistentVolumeClaim": {"claimName": "models", "readOnly": True}} in pod["volumes"]
    assert {"name": "models", "mountPath": "/weights", "readOnly": True} in pod["containers"][0]["volumeMounts"]
    assert _config(manifests, "-base")["modelStore"] == "/weights"


def test_rendered_configs_load_in_the_runtime_without_dropping_a_key() -> None:
    """The other side of the contract: the runtime's own config model keeps everything we write."""
    from swiftdiffusion.operator.drift import contains
    from swiftdiffusion.runtime.config import RuntimeConfig

    wf = workflow(controlnets=[CANNY, DEPTH], loras=[{"name": "pixel", "source": "/m/p.safetensors", "k": 8}],
                  serving={"latentParallelism": "Enabled", "controlnetMode": "pipelined"}, basePool={"gpus": 2})
    manifests = render.render_workflow(wf) + render.render_shared_pool("p", [wf])
    for suffix in ("-base", "-cn", "swd-cn-p"):
        written = _config(manifests, suffix)
        loaded = RuntimeConfig.model_validate(written).model_dump(by_alias=True, exclude_none=True)
        assert contains(written, loaded), suffix


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_controlnet_pools_run_in_the_workflows_dtype(dtype: str) -> None:
    wf = workflow(controlnets=[CANNY], base={"model": "m", "dtype": dtype}, controlnetPool={"sharedPoolName": "p"})
    dedicated = workflow(controlnets=[CANNY], base={"model": "m", "dtype": dtype})
    assert _config(render.render_workflow(dedicated), "-cn")["controlnet"]["dtype"] == dtype
    assert _config(render.render_shared_pool("p", [wf]), "swd-cn-p")["controlnet"]["dtype"] == dtype
    assert _config(render.render_workflow(dedicated), "-base")["base"]["dtype"] == dtype


def test_the_runtime_refuses_a_config_key_it_does_not_know_naming_it(tmp_path) -> None:
    """The runtime's side of the contract, as the pod runs it: `swiftdiffusion serve-base` exits
    non-zero before loading anything."""
    config = _config(render.render_workflow(workflow()), "-base")
    config["base"]["controlnetMod"] = "pipelined"  # a typo of controlnetMode
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run([sys.executable, "-m", "swiftdiffusion.runtime.cli", "serve-base", "--config", str(path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert f"config {path}: base.controlnetMod: Extra inputs are not permitted" in result.stderr


def test_pods_drain_before_they_stop_within_the_grace_period() -> None:
    """preStop delay (endpoints converge), then the runtime's drain, then a margin: all inside
    the pod's grace period; the runtime is told how long its drain may take."""
    manifests = render.render_workflow(workflow(controlnets=[CANNY]))
    for suffix in ("-base", "-cn"):
        pod = _by_kind(manifests, "Deployment", suffix)["spec"]["template"]["spec"]
        pre_stop = pod["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"]
        drain = _config(manifests, suffix)["shutdownGraceSeconds"]
        assert pre_stop > 0 and drain >= 30
        assert pre_stop + drain < pod["terminationGracePeriodSeconds"]


def test_controlnet_pool_services_are_headless_so_base_servers_see_every_pod() -> None:
    manifests = render.render_workflow(workflow(controlnets=[CANNY]))
    assert _by_kind(manifests, "Service", "-cn")["spec"]["clusterIP"] == "None"
    assert "clusterIP" not in _by_kind(manifests, "Service", "-base")["spec"], "clients reach the base pool via a VIP"
    shared = render.render_shared_pool("p", [workflow(controlnets=[CANNY], controlnetPool={"sharedPoolName": "p"})])
    assert _by_kind(shared, "Service", "swd-cn-p")["spec"]["clusterIP"] == "None"
