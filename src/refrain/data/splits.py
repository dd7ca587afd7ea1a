"""Deterministic train/validation split from each record's content hash.

A record's place depends only on its own bytes, so adding or removing other songs never moves it
between splits (no leakage across re-runs); the same song copied twice lands in the same split.
One exception, for tiny datasets: when no hash falls below the fraction, the lowest-hash record is
made the single validation record, and a new or edited song with a lower hash takes that slot over.
"""

from __future__ import annotations

from typing import Any

_DIGITS = 13  # 52 bits of the sha256 hex digest: exact in a float, so the position stays below 1


def hash_position(content_hash: str) -> float:
    """A value in [0, 1) read from the hash, uniform over songs."""
    return int(content_hash[:_DIGITS], 16) / float(16**_DIGITS)


def assign_splits(
    records: list[dict[str, Any]], val_fraction: float
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train, validation); `split` is set on each record.

    Records whose hash position is below `val_fraction` validate. With two or more records and a
    positive fraction there is at least one validation record; there is always a training record.
    """
    ordered = sorted(records, key=lambda r: (hash_position(r["content_hash"]), r["keys"]))
    n_val = sum(1 for r in ordered if hash_position(r["content_hash"]) < val_fraction)
    if len(ordered) >= 2 and val_fraction > 0:
        n_val = max(n_val, 1)
    n_val = min(n_val, len(ordered) - 1)  # something always trains
    validation_ids = {id(r) for r in ordered[:n_val]}
    train, validation = [], []
    for record in records:
        is_val = id(record) in validation_ids
        record["split"] = "validation" if is_val else "train"
        (validation if is_val else train).append(record)
    return train, validation
