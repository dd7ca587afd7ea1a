"""Validation holds the requested share of songs (rounded) with a floor of one, chosen by content hash."""

from __future__ import annotations

import pytest

from refrain.data.splits import assign_splits, describe_split, validation_count


@pytest.mark.parametrize(
    ("total", "fraction", "held"),
    [
        (3, 0.1, 1),
        (4, 0.1, 1),
        (14, 0.1, 1),
        (15, 0.1, 2),
        (100, 0.1, 10),
        (4, 0.5, 2),
        (2, 0.9, 1),  # something always trains
        (1, 0.5, 0),  # a single song trains
        (50, 0.0, 0),
    ],
)
def test_validation_count(total: int, fraction: float, held: int) -> None:
    assert validation_count(total, fraction) == held


def _records(n: int, digit: str = "0") -> list[dict]:
    """Records whose hash positions are all near `digit`/16 (all below 0.1 for '0')."""
    return [{"keys": f"s{i}", "content_hash": f"{digit}{i:063x}"} for i in range(n)]


def test_three_low_hashes_hold_out_one_not_two() -> None:
    """The old rule validated every hash below the fraction: 2 of 3 songs at --val_fraction 0.1."""
    train, validation = assign_splits(_records(3), 0.1)
    assert [r["keys"] for r in validation] == ["s0"] and [r["keys"] for r in train] == ["s1", "s2"]
    assert {r["split"] for r in train} == {"train"}


def test_high_hashes_still_give_the_floor_and_the_lowest_hash_validates() -> None:
    train, validation = assign_splits(_records(4, "f"), 0.1)
    assert [r["keys"] for r in validation] == ["s0"] and len(train) == 3


def test_groups_stay_together_and_are_what_is_counted() -> None:
    records = _records(9, "8")
    train, validation = assign_splits(records, 0.34, group_of=lambda r: f"song{int(r['keys'][1:]) // 3}")
    assert len(validation) == 3 and len(train) == 6  # one song of three, with its three records
    by_song: dict[str, set[str]] = {}
    for r in records:
        by_song.setdefault(f"song{int(r['keys'][1:]) // 3}", set()).add(r["split"])
    assert sorted(len(splits) for splits in by_song.values()) == [1, 1, 1]


def test_same_records_same_split_in_any_order() -> None:
    records = _records(20, "3")
    _, first = assign_splits([dict(r) for r in records], 0.1)
    _, again = assign_splits([dict(r) for r in reversed(records)], 0.1)
    assert sorted(r["keys"] for r in first) == sorted(r["keys"] for r in again) and len(first) == 2


def test_describe_split_says_what_the_floor_did() -> None:
    assert describe_split(4, 0.1, "songs") == (
        "validation 1 of 4 songs (--val_fraction 0.1 x 4 = 0.4, raised to the floor of 1)"
    )
    assert describe_split(100, 0.1) == "validation 10 of 100 records (--val_fraction 0.1 x 100 = 10, rounded)"
    assert describe_split(2, 0.9).endswith("one less so that something trains)")
