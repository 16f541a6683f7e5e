"""Shared pytest configuration: fixtures live in plugin modules beside the tests."""
import os

import torch

# Two cores in CI: torch-heavy tests run in one worker with a deliberate thread count.
torch.set_num_threads(int(os.environ.get("SWIFTDIFFUSION_TEST_THREADS", "1")))
