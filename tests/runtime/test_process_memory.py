"""The services keep the memory a request frees (`serving.process.keep_freed_memory`), so a
request does not fault its tensors' pages in afresh."""
from __future__ import annotations

import statistics
import subprocess
import sys
from pathlib import Path

from swiftdiffusion.runtime.client import generate, generate_request

# Blocks of 1 to 24 MiB, each larger than the last, freed at once: glibc's default maps each
# one anew (its threshold follows the largest block freed so far), a kept heap reuses its pages.
ALLOCATIONS = """
import resource, sys
from swiftdiffusion.runtime.serving.process import keep_freed_memory
if sys.argv[1] == "kept":
    assert keep_freed_memory()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for mib in range(1, 25):
    block = bytearray(mib << 20)
    block[::4096] = b"\\1" * len(block[::4096])
    del block
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(mode: str) -> int:
    return int(subprocess.run([sys.executable, "-c", ALLOCATIONS, mode], check=True, capture_output=True,
                              text=True).stdout)


def test_kept_memory_is_not_faulted_in_again() -> None:
    default, kept = faults("default"), faults("kept")
    assert default > 60_000, default  # 300 MiB touched in 4 KiB pages, each block mapped anew
    assert kept < default / 5, (kept, default)


def minor_faults(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[7])


def test_a_served_request_faults_in_few_pages(tiny_stack) -> None:
    """The median over seven requests: a request on a new gRPC worker thread starts a heap of
    its own (up to 1,000 faults once); with glibc's defaults the median is 500-1,000."""
    target, pid = tiny_stack.base.target, tiny_stack.base.process.pid

    def faults_serving(seed: int) -> int:
        before = minor_faults(pid)
        generate(target, generate_request("a red cube", seed=seed, steps=8, width=64, height=64, guidance_scale=5.0))
        return minor_faults(pid) - before

    for seed in range(2):  # the first requests' own set-up
        faults_serving(seed)
    assert statistics.median(faults_serving(seed) for seed in range(2, 9)) < 100
