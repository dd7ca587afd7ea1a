"""Shared text-test fixtures: one G2P per module, because espeak voices are slow to create."""

from __future__ import annotations

import pytest

from refrain.text.g2p import G2P


@pytest.fixture(scope="module")
def g2p() -> G2P:
    return G2P()
