"""Train/validation split: the requested share of songs, chosen by content hash, with a floor of one.

How many: ``validation_count(n, fraction)`` = ``round(fraction * n)`` (halves round up), but at least
one when the fraction is above 0 and there are two or more units, and never all of them (something
always trains). So ``--val_fraction 0.1`` holds out 1 of 3, 1 of 4, 1 of 14, 2 of 15, 10 of 100;
``--val_fraction 0`` holds out none.

Which: the units with the lowest hash position (a number in [0, 1) read from the content hash), so
the choice depends only on the songs' bytes: the same folder always gives the same split, wherever
and whenever it is prepared, and a song copied twice lands beside itself. Adding songs can move a song
across the border (a new song with a lower hash takes a validation slot, or the count grows);
`refrain-prepare` prints every record whose split changed.

A unit is a record, or a group of records that must stay together (the roles of one multitrack song):
a group's position is read from the hash of its records' hashes, and the whole group goes one way.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from typing import Any

_DIGITS = 13  # 52 bits of the sha256 hex digest: exact in a float, so the position stays below 1
MIN_VALIDATION = 1  # the floor: with a fraction above 0 and two or more units, one unit validates


def hash_position(content_hash: str) -> float:
    """A value in [0, 1) read from the hash, uniform over songs."""
    return int(content_hash[:_DIGITS], 16) / float(16**_DIGITS)


def validation_count(total: int, fraction: float) -> int:
    """How many of `total` units validate (see the module note)."""
    if total < 2 or fraction <= 0:
        return 0
    wanted = math.floor(fraction * total + 0.5)
    return min(max(wanted, MIN_VALIDATION), total - 1)


def describe_split(total: int, fraction: float, unit: str = "records") -> str:
    """One sentence for the report: what was asked and what the floor did."""
    held = validation_count(total, fraction)
    asked = fraction * total
    text = f"validation {held} of {total} {unit} (--val_fraction {fraction:g} x {total} = {asked:.3g}"
    if held > math.floor(asked + 0.5):
        return text + f", raised to the floor of {MIN_VALIDATION})"
    if held and held < math.floor(asked + 0.5):
        return text + ", one less so that something trains)"
    return text + ", rounded)"


def group_position(content_hashes: list[str]) -> float:
    """The position of a group of records (independent of their order)."""
    return hash_position(hashlib.sha256("".join(sorted(content_hashes)).encode()).hexdigest())


def assign_splits(
    records: list[dict[str, Any]],
    val_fraction: float,
    group_of: Callable[[dict[str, Any]], str] | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train, validation) with `split` set on each record, in their input order.

    `group_of` (record -> group name) keeps each group in one split and counts groups, not records.
    """
    groups: dict[str, list[dict[str, Any]]] = {}
    for index, record in enumerate(records):
        name = group_of(record) if group_of is not None else f"{index}"
        groups.setdefault(name, []).append(record)

    def order(item: tuple[str, list[dict[str, Any]]]) -> tuple[float, str]:
        name, members = item
        if group_of is None:
            return hash_position(members[0]["content_hash"]), members[0]["keys"]
        return group_position([r["content_hash"] for r in members]), name

    ranked = sorted(groups.items(), key=order)
    held = {name for name, _ in ranked[: validation_count(len(ranked), val_fraction)]}
    train, validation = [], []
    for name, members in groups.items():
        for record in members:
            record["split"] = "validation" if name in held else "train"
    for record in records:
        (validation if record["split"] == "validation" else train).append(record)
    return train, validation
