"""Turn a song's lyrics (LRC or ACE-Step structured text, or none) into timed lines and phoneme ids.

LRC gives line times directly; structured lyrics get times estimated over the song's duration; no
lyrics means an instrumental record. Every timed line gets one phoneme-id list ending with the
sentence-end token, so `lrc` and `phoneme_ids` stay parallel; a line G2P cannot read keeps only the
sentence end (its span stays assigned to it rather than stretching the previous line).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from refrain.data.issues import Issue, make_issue
from refrain.data.schema import INSTRUMENTAL
from refrain.text.encoding import describe_encoding, read_text_with_encoding
from refrain.text.g2p import G2P, SongContext, UnsupportedScriptError, pronounceable
from refrain.text.lrc import LrcLine, lines_after_note, looks_like_lrc, parse_lrc
from refrain.text.lyrics import estimate_line_times, normalize_lyrics, parse_structured_lyrics
from refrain.text.vocab import PhonemeVocab


@dataclass
class LyricFields:
    """The record fields derived from lyrics, plus the issues met deriving them."""

    norm_lyrics: str = ""
    lrc: list[dict[str, Any]] = field(default_factory=list)
    lrc_source: str = "none"
    phoneme_ids: list[list[int]] = field(default_factory=list)
    language: str = INSTRUMENTAL
    issues: list[Issue] = field(default_factory=list)


def read_sidecar_text(path: Path) -> tuple[str, list[Issue]]:
    """A lyrics or tags file's text through the encoding fallback chain, with an issue when it was not
    UTF-8 (`text_encoding`, naming the encoding) or fit no encoding (`text_undecodable`)."""
    text, encoding = read_text_with_encoding(path)
    note = describe_encoding(encoding)
    if note is None:
        return text, []
    code = "text_undecodable" if encoding is None else "text_encoding"
    return text, [make_issue(code, f"{path.name}: {note}")]


def _timed_lines(text: str, fmt: str, duration: float, source: str) -> tuple[list[LrcLine], str, list[Issue]]:
    """(lines, lrc_source, issues) for LRC or structured lyrics (LRC: the policy of `refrain.text.lrc`)."""
    if fmt == "lrc" or looks_like_lrc(text):
        parsed = parse_lrc(text, source=source)
        note = parsed.malformed_note()
        issues = [make_issue("malformed_lrc", note)] if note else []
        return sorted(parsed.lines, key=lambda line: line.time), "lrc", issues
    structured = parse_structured_lyrics(text)
    if not structured:
        return [], "none", []
    return estimate_line_times(structured, duration=duration), "estimated", []


def _phonemize(
    g2p: G2P, texts: list[str], language: str | None, context: SongContext | None
) -> tuple[list[list[str]], list[int]]:
    """Phones per line (one batched G2P call); lines in an unreadable script get [] and are listed."""
    try:
        return g2p.phonemize_lines(texts, language=language, context=context), []
    except UnsupportedScriptError:
        pass
    phones, unsupported = [], []
    for index, text in enumerate(texts):
        try:
            phones.append(g2p.phonemize_lines([text], language=language, context=context)[0])
        except UnsupportedScriptError:
            phones.append([])
            unsupported.append(index)
    return phones, unsupported


def build_lyric_fields(
    text: str | None,
    fmt: str | None,
    duration: float,
    language: str | None,
    g2p: Callable[[], G2P],
    vocab: PhonemeVocab,
    source: str = "<lyrics>",
) -> LyricFields:
    """Record fields for one song. `language` None/'auto' reads each line in the song's context (its
    majority language; a line switches only on evidence); the vocabulary grows as needed.

    Lyrics with nothing pronounceable (emoji, symbols) give an instrumental record and a
    `no_pronounceable_lyrics` note, as sampling treats them. `g2p` is a factory because building G2P
    is slow and instrumental songs never need it.
    """
    if not text or not text.strip() or fmt is None:
        return LyricFields(issues=[make_issue("no_lyrics", "no lyrics file" if text is None else "empty")])
    lines, lrc_source, issues = _timed_lines(text, fmt, duration, source)
    sung = [line for line in lines if line.text.strip()]
    if not sung:
        issues.append(make_issue("no_lyrics", "no sung line with a timestamp"))
        return LyricFields(issues=issues)
    fixed = None if language in (None, "", "auto") else language
    reader = g2p()
    context = None if fixed else reader.context([line.text for line in lines])
    phones, unsupported = _phonemize(reader, [line.text for line in lines], fixed, context)
    if unsupported:
        first = lines[unsupported[0]].text
        issues.append(make_issue("unsupported_script", f"{len(unsupported)} line(s), first: {first!r}"))
    if not pronounceable(phones):
        issues.append(make_issue("no_pronounceable_lyrics", f"{len(sung)} line(s), first: {sung[0].text!r}"))
        return LyricFields(issues=issues)
    late = lines_after_note(sung, duration)
    if late:
        issues.append(make_issue("lyrics_past_end", late))
    phoneme_ids = [vocab.encode_sentence(p, grow=True) for p in phones]
    # ACE-Step keeps structure tags in norm_lyrics; LRC lyrics become their plain lines.
    norm = normalize_lyrics(text if lrc_source == "estimated" else "\n".join(line.text for line in sung))
    return LyricFields(
        norm_lyrics=norm,
        lrc=[{"time": float(line.time), "text": line.text} for line in lines],
        lrc_source=lrc_source,
        phoneme_ids=phoneme_ids,
        language=fixed or (context.language if context else INSTRUMENTAL),
        issues=issues,
    )
