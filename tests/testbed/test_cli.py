"""The test bed's CLI runs on the system Python, as `make testbed` calls it on a fresh machine."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_status_runs_on_the_system_python_with_no_project_installed(tmp_path: Path) -> None:
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin:" + os.environ["PATH"], "HOME": os.environ["HOME"],
           "SWIFTDIFFUSION_TESTBED_DIR": str(tmp_path / "bed")}
    done = subprocess.run([str(REPO / "scripts" / "testbed"), "status"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 1, done.stderr  # down: nothing is up in a fresh state dir
    assert "testbed: down" in done.stdout
