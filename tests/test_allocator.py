"""refrain.allocator: with glibc told to keep freed memory, a step's re-allocation faults no pages in."""

from __future__ import annotations

import subprocess
import sys

import pytest

from refrain.allocator import keep_freed_memory

LINUX = sys.platform.startswith("linux")

# What a training step does to the heap, in small: allocate 96 MB in 6 MB tensors, free them all; printed:
# the minor page faults of steps 3 to 5 (the first two grow the heap to the step's peak).
STEPS = """
import resource, sys, torch
if sys.argv[1] == "keep":
    from refrain.allocator import keep_freed_memory
    assert keep_freed_memory()
def step():
    tensors = [torch.ones(1_500_000) for _ in range(16)]
    del tensors
step()
step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not LINUX, reason="glibc's mallopt")
def test_keep_freed_memory_takes_and_is_idempotent() -> None:
    if not keep_freed_memory():
        pytest.skip("malloc is not glibc's")
    assert keep_freed_memory()


@pytest.mark.slow
@pytest.mark.skipif(not LINUX, reason="glibc's mallopt")
def test_a_repeated_step_reuses_its_freed_memory() -> None:
    """Fresh interpreters, so the heap starts the same: glibc's defaults fault ~23,000 pages on steps 3
    and 4 (the heap top is trimmed after every step, until its own threshold adapts); kept: none."""

    def faults(mode: str) -> int:
        out = subprocess.run(
            [sys.executable, "-c", STEPS, mode], capture_output=True, text=True, check=True, timeout=120
        )
        return int(out.stdout.split()[-1])

    default, kept = faults("default"), faults("keep")
    assert default > 10_000, default  # the behaviour the setting is for (fails if glibc changes it)
    assert kept < default / 10, (kept, default)
