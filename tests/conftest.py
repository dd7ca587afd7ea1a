"""Shared test set-up: offline hubs, offline wandb, fixtures located through REFRAIN_FIXTURES."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# One compute thread per process: on 2 shared cores, OpenMP's spinning worker threads make tiny-tensor
# tests 10-50x slower (measured), and a fixed thread count keeps bit-exact comparisons stable.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def single_thread() -> Iterator[None]:
    """One intra-op thread per test (see OMP_NUM_THREADS above), restored afterwards."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """Real inputs from peer projects (../shared/fixtures); skip cleanly when CI did not point at them."""
    value = os.environ.get("REFRAIN_FIXTURES")
    if not value:
        pytest.skip("REFRAIN_FIXTURES is not set; .ci/run points it at ../shared/fixtures")
    path = Path(value)
    if not path.is_dir():
        pytest.skip(f"REFRAIN_FIXTURES={value} is not a directory")
    return path


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked gpu run only where CUDA is present."""
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except Exception:  # pragma: no cover - torch is a hard dependency
        has_cuda = False
    if has_cuda:
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
