"""A supervised daemon comes back after a crash, as a Deployment's pod would, and stopping
its group stops it for good."""
from __future__ import annotations

import os
import signal
from pathlib import Path

from tests.testbed import processes
from tests.testbed.cluster import REPO
from tests.testbed.waiting import eventually


def test_a_supervised_command_is_restarted_after_a_kill_and_stopped_with_its_group(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    processes.start("daemon", processes.supervised(["/bin/sleep", "600"]), tmp_path, tied_to_parent=True, env=env)
    try:
        [first] = eventually(lambda: processes.members(tmp_path, "daemon"), timeout=10)
        os.kill(first, signal.SIGKILL)
        [second] = eventually(lambda: [p for p in processes.members(tmp_path, "daemon") if p != first], timeout=10)
        assert os.readlink(f"/proc/{second}/exe") == os.path.realpath("/bin/sleep")
        log = (tmp_path / "logs" / "daemon.log").read_text()
        assert "/bin/sleep exited with -9" in log and "restart 1 in 1 s" in log
    finally:
        processes.stop(tmp_path, "daemon")
    eventually(lambda: not processes.live(second), timeout=10)
