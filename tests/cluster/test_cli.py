"""`scripts/testbed up` / `down`: idempotent start, and nothing left behind after down."""
from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

import pytest

from tests.testbed import processes
from tests.testbed.waiting import eventually

pytestmark = pytest.mark.cluster

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "testbed"


def run_testbed(command: str, state: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SWIFTDIFFUSION_TESTBED_DIR": str(state)}
    return subprocess.run([str(SCRIPT), command], env=env, capture_output=True, text=True, timeout=300, check=False)


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_up_is_idempotent_and_down_leaves_no_process_or_port(tmp_path):
    state = tmp_path / "bed"
    try:
        first = run_testbed("up", state)
        assert first.returncode == 0, first.stderr
        assert first.stdout.strip() == str(state / "kubeconfig")
        again = run_testbed("up", state)
        assert again.returncode == 0 and "already up" in again.stderr
        ports = list(json.loads((state / "testbed.json").read_text())["ports"].values())
        pids = [pid for pid, _ in processes.recorded(state).values()]
        assert len(pids) == 5 and all(map(listening, ports))
    finally:
        down = run_testbed("down", state)
    assert down.returncode == 0, down.stderr
    # Stopped daemons were re-parented to init when `up` exited: allow it a moment to reap them.
    eventually(lambda: not any(Path(f"/proc/{pid}").exists() for pid in pids), timeout=10)
    assert not any(map(listening, ports))
    assert run_testbed("status", state).returncode == 1
