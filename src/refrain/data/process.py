"""Prepare one source item: validate its audio, read its tags and lyrics, build its record."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from refrain.data.audio_checks import DEFAULT_MAX_SECONDS, inspect_audio
from refrain.data.issues import Issue, make_issue
from refrain.data.lyric_fields import build_lyric_fields, read_sidecar_text
from refrain.data.outcome import FileOutcome
from refrain.data.schema import INSTRUMENTAL, empty_recaption
from refrain.data.sources import SourceItem, split_tags
from refrain.text.g2p import G2P
from refrain.text.vocab import PhonemeVocab


@dataclass
class ProcessContext:
    """Settings and shared objects for every item of a run; G2P is built on first use (it is slow)."""

    min_seconds: float
    language: str
    vocab: PhonemeVocab
    max_seconds: float | None = DEFAULT_MAX_SECONDS  # longer files are skipped as too_long before decoding
    _g2p: G2P | None = field(default=None, repr=False)

    @property
    def g2p(self) -> G2P:
        if self._g2p is None:
            self._g2p = G2P()
        return self._g2p


def item_tags(item: SourceItem, issues: list[Issue] | None = None) -> list[str]:
    """Tags from the inline source (CSV row, licence table) or the item's tags file (a non-UTF-8 file is
    decoded by the fallback chain and an issue naming its encoding is appended to `issues`)."""
    if item.inline_tags is not None:
        return list(item.inline_tags)
    if item.tags_file is not None:
        text, found = read_sidecar_text(item.tags_file)
        if issues is not None:
            issues.extend(found)
        return split_tags(text)
    return []


def process_item(item: SourceItem, content_hash: str, ctx: ProcessContext) -> FileOutcome:
    """The outcome for one item; never raises for bad input (problems become issues)."""
    outcome = FileOutcome(audio=str(item.audio), key=item.key)
    facts, issues = inspect_audio(item.audio, ctx.min_seconds, ctx.max_seconds)
    outcome.issues.extend(issues)
    if facts is None:
        return outcome
    try:
        tags = item_tags(item, outcome.issues)
    except OSError as err:
        tags = []
        outcome.issues.append(make_issue("no_tags", f"{item.tags_file}: {err.strerror}"))
    else:
        if not tags:
            outcome.issues.append(
                make_issue("no_tags", "no tags file" if item.tags_file is None else "empty")
            )
    lyrics = None
    if item.lyrics_file is not None:
        try:
            lyrics, found = read_sidecar_text(item.lyrics_file)
        except OSError:
            lyrics = None
        else:
            outcome.issues.extend(found)
    fields = build_lyric_fields(
        lyrics,
        item.lyrics_format,
        duration=facts.duration,
        language=item.language or ctx.language,
        g2p=lambda: ctx.g2p,
        vocab=ctx.vocab,
        source=str(item.lyrics_file),
    )
    outcome.issues.extend(fields.issues)
    outcome.record = make_record(item, tags, content_hash, facts.duration, facts.sample_rate, facts.channels)
    outcome.record.update(
        norm_lyrics=fields.norm_lyrics,
        lrc=fields.lrc,
        lrc_source=fields.lrc_source,
        phoneme_ids=fields.phoneme_ids,
        language=fields.language,
    )
    return outcome


def make_record(
    item: SourceItem, tags: list[str], content_hash: str, duration: float, sample_rate: int, channels: int
) -> dict[str, Any]:
    """A record with ACE-Step's fields and refrain's, lyrics left instrumental (filled by the caller)."""
    return {
        "keys": item.key,
        "filename": str(item.audio),
        "tags": tags,
        "speaker_emb_path": "",
        "norm_lyrics": "",
        "recaption": empty_recaption(),
        "lrc": [],
        "lrc_source": "none",
        "phoneme_ids": [],
        "duration": float(duration),
        "sample_rate": int(sample_rate),
        "channels": int(channels),
        "language": INSTRUMENTAL,
        "content_hash": content_hash,
        "split": "",
    }
