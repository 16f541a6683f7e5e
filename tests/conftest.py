"""Shared pytest configuration. Fixtures live in plugin modules, registered here."""
import os

import torch

# Two cores in CI: torch-heavy tests run in one worker with a deliberate thread count.
torch.set_num_threads(int(os.environ.get("SWIFTDIFFUSION_TEST_THREADS", "1")))

# Each line registers one fixture module (tests.<folder>.fixtures).
pytest_plugins: list[str] = [
    "tests.runtime.fixtures",
    "tests.cfg.fixtures",
    "tests.lora.fixtures",
    "tests.testbed.fixtures",
    "tests.reconcile.fixtures",
    "tests.chart.fixtures",
    "tests.images.fixtures",
    "tests.workers",
]
