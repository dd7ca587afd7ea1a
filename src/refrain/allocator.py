"""glibc's malloc on a CPU run: keep the memory a step frees for the next step instead of re-faulting it.

Why: a training step or a sampler call frees its activations at the end. glibc then returns the top of
its heap to the OS once more than M_TRIM_THRESHOLD is free there (a threshold it adjusts itself, to at
most 64 MiB), and the next step touches every page of that memory again as a fresh, zeroed page. Measured
on bench_dit's realistic DiT step on one thread: 3,000 to 35,000 minor page faults and up to ~50 ms of
system time per step, and slower user time on the fresh pages; between the sampler's model calls the
guidance and solver tensors fault the same way. A fixed trim threshold stops it (PyTorch's CPU tuning
guide swaps in jemalloc or tcmalloc for the same reason; this needs no preloaded library). The process
keeps its heap at the step's peak, which the next step needs anyway.

Called by the training and sampling entry points when the model runs on the CPU, and by the benches
(for both sides of a comparison), so the figures they print are what a refrain run gets.
"""

from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_MAX = 32 << 20  # glibc refuses larger mmap thresholds on 64-bit builds
_state: dict[str, bool] = {}


def keep_freed_memory(trim_threshold: int = 1 << 30) -> bool:
    """Keep up to ``trim_threshold`` bytes of freed heap (and blocks up to 32 MiB on the heap, not mmap).

    Returns True when glibc took the settings; False elsewhere (macOS, musl, Windows), which changes
    nothing. Idempotent: the first call decides.
    """
    if "kept" in _state:
        return _state["kept"]
    kept = False
    if sys.platform.startswith("linux"):
        try:
            mallopt = ctypes.CDLL(None).mallopt
        except (OSError, AttributeError):  # no glibc malloc (musl has no mallopt)
            mallopt = None
        if mallopt is not None:
            mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
            kept = bool(mallopt(M_TRIM_THRESHOLD, trim_threshold)) and bool(
                mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)
            )
    _state["kept"] = kept
    return kept
