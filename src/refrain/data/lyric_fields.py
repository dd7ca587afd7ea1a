"""Turn a song's lyrics (LRC or ACE-Step structured text, or none) into timed lines and phoneme ids.

LRC gives line times directly; structured lyrics get times estimated over the song's duration; no
lyrics means an instrumental record. Every timed line gets one phoneme-id list ending with the
sentence-end token, so `lrc` and `phoneme_ids` stay parallel; a line G2P cannot read keeps only the
sentence end (its span stays assigned to it rather than stretching the previous line).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from refrain.data.issues import Issue, make_issue
from refrain.data.schema import INSTRUMENTAL
from refrain.text.g2p import G2P, UnsupportedScriptError, detect_language
from refrain.text.lrc import LrcLine, parse_lrc
from refrain.text.lyrics import estimate_line_times, normalize_lyrics, parse_structured_lyrics
from refrain.text.vocab import PhonemeVocab

_LRC_STAMP = re.compile(r"^\s*\[\d+:\d+")


@dataclass
class LyricFields:
    """The record fields derived from lyrics, plus the issues met deriving them."""

    norm_lyrics: str = ""
    lrc: list[dict[str, Any]] = field(default_factory=list)
    lrc_source: str = "none"
    phoneme_ids: list[list[int]] = field(default_factory=list)
    language: str = INSTRUMENTAL
    issues: list[Issue] = field(default_factory=list)


def looks_like_lrc(text: str) -> bool:
    """Most non-blank lines start with `[mm:ss...]`: a lyrics .txt that is really LRC keeps its times."""
    lines = [line for line in text.splitlines() if line.strip()]
    return bool(lines) and sum(1 for line in lines if _LRC_STAMP.match(line)) * 2 >= len(lines)


def _timed_lines(text: str, fmt: str, duration: float, source: str) -> tuple[list[LrcLine], str, list[Issue]]:
    """(lines, lrc_source, issues) for LRC or structured lyrics."""
    if fmt == "lrc" or looks_like_lrc(text):
        parsed = parse_lrc(text, source=source)
        issues = []
        if parsed.malformed:
            first = parsed.malformed[0]
            issues.append(
                make_issue(
                    "malformed_lrc",
                    f"{len(parsed.malformed)} line(s), first at line {first[0]}: {first[1]!r}",
                )
            )
        lines = sorted(parsed.lines, key=lambda line: line.time)
        return lines, "lrc", issues
    structured = parse_structured_lyrics(text)
    if not structured:
        return [], "none", []
    return estimate_line_times(structured, duration=duration), "estimated", []


def _phonemize(g2p: G2P, texts: list[str], language: str | None) -> tuple[list[list[str]], list[int]]:
    """Phones per line (one batched G2P call); lines in an unreadable script get [] and are listed."""
    try:
        return g2p.phonemize_lines(texts, language=language), []
    except UnsupportedScriptError:
        pass
    phones, unsupported = [], []
    for index, text in enumerate(texts):
        try:
            phones.append(g2p.phonemize_lines([text], language=language)[0])
        except UnsupportedScriptError:
            phones.append([])
            unsupported.append(index)
    return phones, unsupported


def _song_language(text: str) -> str:
    """The song's dominant language by script; 'unknown' when no line is in a readable script."""
    if not text.strip():
        return "unknown"
    try:
        return detect_language(text)
    except UnsupportedScriptError:
        return "unknown"


def build_lyric_fields(
    text: str | None,
    fmt: str | None,
    duration: float,
    language: str | None,
    g2p: Callable[[], G2P],
    vocab: PhonemeVocab,
    source: str = "<lyrics>",
) -> LyricFields:
    """Record fields for one song. `language` None/'auto' detects; the vocabulary grows as needed.

    `g2p` is a factory because building G2P is slow and instrumental songs never need it.
    """
    if not text or not text.strip() or fmt is None:
        return LyricFields(issues=[make_issue("no_lyrics", "no lyrics file" if text is None else "empty")])
    lines, lrc_source, issues = _timed_lines(text, fmt, duration, source)
    sung = [line for line in lines if line.text.strip()]
    if not sung:
        issues.append(make_issue("no_lyrics", "no sung line with a timestamp"))
        return LyricFields(issues=issues)
    late = [line for line in sung if line.time >= duration]
    if late:
        issues.append(
            make_issue("lyrics_past_end", f"{len(late)} of {len(sung)} lines start after {duration:.2f} s")
        )
    fixed = None if language in (None, "", "auto") else language
    phones, unsupported = _phonemize(g2p(), [line.text for line in lines], fixed)
    phoneme_ids = [vocab.encode_sentence(p, grow=True) for p in phones]
    if unsupported:
        first = lines[unsupported[0]].text
        issues.append(make_issue("unsupported_script", f"{len(unsupported)} line(s), first: {first!r}"))
    skipped = set(unsupported)
    readable = "\n".join(line.text for i, line in enumerate(lines) if i not in skipped)
    song_language = fixed or _song_language(readable)
    # ACE-Step keeps structure tags in norm_lyrics; LRC lyrics become their plain lines.
    norm = normalize_lyrics(text if lrc_source == "estimated" else "\n".join(line.text for line in sung))
    return LyricFields(
        norm_lyrics=norm,
        lrc=[{"time": float(line.time), "text": line.text} for line in lines],
        lrc_source=lrc_source,
        phoneme_ids=phoneme_ids,
        language=song_language,
        issues=issues,
    )
