"""Ports for local processes: one picker's ports are not handed to another picker while the
processes they are for start (the suite's workers pick ports all the time)."""
from __future__ import annotations

import json
import subprocess
import sys

from swiftdiffusion.runtime.dev.ports import CLAIMS, free_ports


def test_ports_one_picker_claimed_are_not_handed_to_another_picker() -> None:
    first, second = free_ports(300), []
    try:
        out = subprocess.run([sys.executable, "-c", "import json; from swiftdiffusion.runtime.dev.ports import "
                              "free_ports; print(json.dumps(free_ports(300)))"],
                             check=True, capture_output=True, text=True, timeout=60)
        second = json.loads(out.stdout)
        # two random draws of 300 from about 22,000 ports would share some almost surely (98%)
        assert len(set(first)) == len(set(second)) == 300
        assert not set(first) & set(second)
    finally:
        for port in first + second:
            (CLAIMS / str(port)).unlink(missing_ok=True)
