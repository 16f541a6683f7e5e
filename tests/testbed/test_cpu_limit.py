"""The fleet's kubelet enforces `limits.cpu` as the kubelet does, with a CFS quota: a
process in the limit's cgroup gets that share of a core and no more."""
from __future__ import annotations

import subprocess
import sys
import time
import uuid

import pytest

from tests.testbed.fleet import container, cpu
from tests.testbed.waiting import eventually

BUSY = "import time\nend = time.process_time() + 0.2\nwhile time.process_time() < end: pass"


@pytest.mark.parametrize(("value", "cores"), [("300m", 0.3), ("1", 1.0), ("1.5", 1.5), (None, None)])
def test_the_limit_is_read_in_cores(value: str | None, cores: float | None) -> None:
    spec = {"name": "runtime", "resources": {"limits": {"cpu": value}} if value else {}}
    assert cpu.limit_cores(spec) == cores


@pytest.mark.parametrize(("limit", "threads"), [("200m", "1"), ("1", "1"), ("1500m", "2")])
def test_a_cpu_limit_from_the_downward_api_is_rounded_up_to_whole_cores_and_torch_takes_it(
        limit: str, threads: str) -> None:
    """The operator's pods ask for OMP_NUM_THREADS from `limits.cpu` (divisor 1), as the kubelet
    resolves it: torch in the container then runs that many intra-op threads."""
    spec = {"name": "runtime", "resources": {"limits": {"cpu": limit}}, "env": [
        {"name": "OMP_NUM_THREADS", "valueFrom": {"resourceFieldRef": {
            "containerName": "runtime", "resource": "limits.cpu", "divisor": "1"}}}]}
    pod = {"metadata": {"name": "p", "namespace": "n", "uid": "u"}, "spec": {"containers": [spec]}}
    env = container.environment(pod, spec, "10.0.0.1")
    assert env["OMP_NUM_THREADS"] == threads
    out = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
                         env=env, capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.split()[-1] == threads


def test_an_unsupported_resource_field_is_refused_by_name() -> None:
    spec = {"name": "runtime", "env": [{"name": "M", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory"}}}]}
    pod = {"metadata": {"name": "p", "namespace": "n", "uid": "u"}, "spec": {"containers": [spec]}}
    with pytest.raises(container.ContainerConfigError, match="limits.memory"):
        container.environment(pod, spec, "10.0.0.1")


def test_a_pod_with_a_limit_joins_its_cgroup_before_its_command_runs() -> None:
    launch = container.Launch(["python", "-m", "x"], {}, cpu_limit=0.3)
    procs = cpu.CGROUPS / "cpu" / cpu.GROUP / "uid" / "cgroup.procs"
    script = container.namespaced_argv(launch, cpu.CGROUPS / "resolv.conf", procs)[7]
    assert script.splitlines()[:2] == ["set -e", f"echo $$ > {procs}"]
    assert "echo" not in container.namespaced_argv(launch, cpu.CGROUPS / "resolv.conf")[7]


def test_a_process_in_the_limits_cgroup_runs_at_the_limit_and_the_cgroup_goes_after_it() -> None:
    procs = cpu.create(f"test-{uuid.uuid4().hex[:8]}", 0.25)
    try:
        started = time.monotonic()
        subprocess.run(cpu.joining(procs, [sys.executable, "-c", BUSY]), check=True, timeout=30)
        elapsed = time.monotonic() - started
        stat = dict(line.split() for line in (procs.parent / "cpu.stat").read_text().splitlines())
    finally:
        cpu.remove(procs)
    assert int(stat["nr_throttled"]) > 0
    # 0.2 s of CPU at a quarter of a core: at least 0.8 s (1 s less a period's slack), where
    # unlimited it takes 0.2 s plus start-up
    assert elapsed >= 0.7, elapsed
    assert not procs.parent.exists()


def test_a_limited_process_keeps_its_share_while_the_machine_is_busy() -> None:
    """24 busy processes in the root cgroup, each in a session of its own as the test bed's
    daemons are (the kernel's autogroups weigh each session as one): at the default weight the
    fleet's group would get 1 of 25 shares of the two cores (under a third of the limit)."""
    procs = cpu.create(f"test-{uuid.uuid4().hex[:8]}", 0.25)
    spinners = [subprocess.Popen(["/bin/sh", "-c", "while :; do :; done"], start_new_session=True) for _ in range(24)]
    try:
        started = time.monotonic()
        subprocess.run(cpu.joining(procs, [sys.executable, "-c", BUSY]), check=True, timeout=60)
        elapsed = time.monotonic() - started
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()
        cpu.remove(procs)
    # 0.2 s of CPU (plus start-up) at a quarter of a core takes about 1 s; at 2/25 of two
    # cores, over 3 s
    assert elapsed < 2.0, elapsed


def test_the_cgroup_of_a_process_just_killed_goes_once_the_process_has_exited() -> None:
    """The kubelet removes a pod's cgroup right after it kills the pod's process, before the
    kernel has let go of it; each pod would otherwise leave an empty cgroup behind."""
    procs = cpu.create(f"test-{uuid.uuid4().hex[:8]}", 0.25)
    process = subprocess.Popen(cpu.joining(procs, [sys.executable, "-c", "import time; time.sleep(60)"]))
    try:
        eventually(lambda: procs.read_text().strip(), timeout=10, interval=0.05)
        process.kill()
        cpu.remove(procs)
        assert not procs.parent.exists()
    finally:
        process.kill()
        process.wait()


def test_a_starting_fleet_removes_the_empty_pod_cgroups_a_killed_fleet_left_and_nothing_else() -> None:
    parent = cpu.create(f"test-{uuid.uuid4().hex[:8]}", 0.25).parent
    empty, busy, other = (parent / name for name in (str(uuid.uuid4()), str(uuid.uuid4()), "other"))
    for group in (empty, busy, other):
        group.mkdir()
    process = subprocess.Popen(cpu.joining(busy / "cgroup.procs", [sys.executable, "-c", "import time; time.sleep(60)"]))
    try:
        eventually(lambda: (busy / "cgroup.procs").read_text().strip(), timeout=10, interval=0.05)
        assert cpu.sweep(parent) == [empty.name]
        assert not empty.exists() and busy.exists() and other.exists()
    finally:
        process.kill()
        process.wait()
        for group in (busy, other, parent):
            cpu.remove(group / "cgroup.procs")
