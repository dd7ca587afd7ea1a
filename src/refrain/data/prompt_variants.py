"""Every style prompt a record can be trained with, so one variant is drawn per step (ACE-Step's recipe).

ACE-Step reshuffles a record's tags at every step, or picks one of its recaption texts. Encoding a
fresh shuffle each step would keep the text encoder in the training loop, so refrain stores a few
fixed shuffles (seeded by the record's content hash, so the cache and the online path agree) plus each
non-empty recaption field, encodes them all once, and training draws one of them per step.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from refrain.data.schema import RECAPTION_KEYS

TAG_SEPARATOR = ", "


@dataclass(frozen=True)
class PromptVariant:
    """One prompt text and where it came from: ``tags<i>`` (the i-th shuffle) or a recaption field name."""

    name: str
    text: str


def _shuffle_rng(content_hash: str, index: int) -> np.random.Generator:
    digest = hashlib.sha256(f"{content_hash}\0{index}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def prompt_variants(
    tags: Sequence[str],
    recaption: Mapping[str, str] | None,
    content_hash: str,
    tag_shuffles: int = 4,
) -> list[PromptVariant]:
    """The record's prompt variants, duplicates removed, never empty.

    Shuffle 0 keeps the tags in their given order; shuffles 1.. are permutations drawn from the content
    hash (a record always gets the same ones). Recaption fields follow in schema order. A record with
    neither tags nor recaptions gets one empty prompt, which the text encoder still embeds.
    """
    clean = [str(tag).strip() for tag in tags if str(tag).strip()]
    texts: list[PromptVariant] = []
    seen: set[str] = set()

    def add(name: str, text: str) -> None:
        if text and text not in seen:
            seen.add(text)
            texts.append(PromptVariant(name, text))

    if clean:
        for index in range(max(1, int(tag_shuffles))):
            order = (
                clean
                if index == 0
                else [clean[i] for i in _shuffle_rng(content_hash, index).permutation(len(clean))]
            )
            add(f"tags{index}", TAG_SEPARATOR.join(order))
    for field in RECAPTION_KEYS:
        add(field, str((recaption or {}).get(field) or "").strip())
    return texts or [PromptVariant("empty", "")]


def record_prompt_variants(record: Mapping, tag_shuffles: int = 4) -> list[PromptVariant]:
    """`prompt_variants` of a dataset record (its ``tags``, ``recaption`` and ``content_hash`` fields)."""
    return prompt_variants(
        record.get("tags") or [], record.get("recaption"), str(record.get("content_hash") or ""), tag_shuffles
    )
