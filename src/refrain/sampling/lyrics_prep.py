"""Lyrics for sampling: LRC or structured text -> timed lines -> phoneme ids -> the frame-aligned grid.

The same steps data prep takes (refrain.data.lyric_fields), with two differences that matter at
inference: the vocabulary is frozen (a phoneme the training data never had becomes ``<unk>`` and is
counted, it never grows the table the model's embedding indexes), and plain lyrics are laid out at the
requested tempo instead of being stretched over a known song length; they are squeezed into the
duration only when they would not fit.

The policies are the ones preparation applies, and nothing is dropped silently: malformed LRC lines
are dropped with a note, lines that start after the requested duration are counted in a note, and
lyrics with nothing pronounceable (emoji, symbols) make an instrumental with a note. The notes travel
in ``TimedLyrics.notes``, into the song's sidecar (``lyrics_notes``) and onto the console.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from refrain.errors import RefrainInputError
from refrain.text.alignment import align_sentences
from refrain.text.g2p import G2P, pronounceable
from refrain.text.lrc import LrcLine, lines_after_note, looks_like_lrc, parse_lrc
from refrain.text.lyrics import estimate_line_times, parse_structured_lyrics
from refrain.text.vocab import PhonemeVocab

LYRICS_FORMATS = ("auto", "lrc", "structured")
_MIN_LAST_LINE_BEATS = 2  # a last line needs this many beats before the end, or the layout is squeezed


@dataclass
class TimedLyrics:
    """Lines with start times, their phoneme ids (sentence end included; [] for a line with no text)."""

    lines: list[LrcLine]
    phoneme_ids: list[list[int]]
    source: str  # "lrc" | "estimated" | "none"
    unknown_phonemes: int = 0
    notes: list[str] = field(default_factory=list)  # what was dropped or changed, one sentence each
    text: str = ""  # the lyrics as given (a backbone that reads raw lyrics, e.g. ACE-Step 1.5, uses these)

    def grid(self, num_frames: int, frame_rate: float) -> torch.LongTensor:
        """(num_frames,) phoneme ids on the latent frame grid, 0 where nothing is sung."""
        sentences = [(line.time, ids) for line, ids in zip(self.lines, self.phoneme_ids, strict=True) if ids]
        return align_sentences(sentences, num_frames, frame_rate)

    def timing(self) -> list[dict[str, Any]]:
        """The laid-out lines as JSON (what a sidecar records)."""
        return [{"time": float(line.time), "text": line.text} for line in self.lines]


def timed_lines(
    text: str,
    duration: float,
    bpm: float = 100.0,
    lyrics_format: str = "auto",
    start: float = 0.0,
) -> tuple[list[LrcLine], str]:
    """(lines sorted by time, source). LRC keeps its times; structured lyrics are laid out at ``bpm``."""
    lines, source, _ = timed_lines_with_notes(text, duration, bpm, lyrics_format, start)
    return lines, source


def timed_lines_with_notes(
    text: str,
    duration: float,
    bpm: float = 100.0,
    lyrics_format: str = "auto",
    start: float = 0.0,
) -> tuple[list[LrcLine], str, list[str]]:
    """`timed_lines` plus the notes: malformed LRC lines dropped, a layout squeezed into ``duration``,
    lines starting after ``duration``."""
    lines, source, parse_notes, layout_notes = _timed(text, duration, bpm, lyrics_format, start)
    return lines, source, parse_notes + layout_notes


def _timed(
    text: str, duration: float, bpm: float, lyrics_format: str, start: float
) -> tuple[list[LrcLine], str, list[str], list[str]]:
    """(lines, source, notes about reading the text, notes about placing its lines in ``duration``)."""
    if lyrics_format not in LYRICS_FORMATS:
        raise RefrainInputError(
            "lyrics_format", f"unknown format {lyrics_format!r}", f"use one of {', '.join(LYRICS_FORMATS)}"
        )
    if not text or not text.strip():
        return [], "none", [], []
    parse_notes: list[str] = []
    layout_notes: list[str] = []
    if lyrics_format == "lrc" or (lyrics_format == "auto" and looks_like_lrc(text)):
        parsed = parse_lrc(text, source="lyrics")
        note = parsed.malformed_note()
        parse_notes += [note] if note else []
        lines, source = sorted(parsed.lines, key=lambda line: line.time), "lrc"
    else:
        structured = parse_structured_lyrics(text)
        if not structured:
            return [], "none", [], []
        lines, source = estimate_line_times(structured, None, bpm, start), "estimated"
        if lines and lines[-1].time > duration - _MIN_LAST_LINE_BEATS * 60.0 / bpm:
            natural = lines[-1].time
            lines = estimate_line_times(structured, duration, bpm, start)  # too long at this tempo: squeeze
            layout_notes.append(
                f"{len(lines)} lyric lines laid out at {bpm:g} bpm would run to {natural:.1f} s; they were "
                f"squeezed into {duration:g} s (last line at {lines[-1].time:.1f} s)"
            )
    late = lines_after_note(lines, duration)
    layout_notes += [f"{late}; those lines are not sung"] if late else []
    return lines, source, parse_notes, layout_notes


class LyricsPreparer:
    """Turns lyric text into ``TimedLyrics`` with a frozen vocabulary; G2P is built on first use (slow)."""

    def __init__(self, vocab: PhonemeVocab, g2p: G2P | None = None) -> None:
        self.vocab = vocab
        self._g2p = g2p

    @property
    def g2p(self) -> G2P:
        if self._g2p is None:
            self._g2p = G2P()
        return self._g2p

    def prepare(
        self,
        text: str,
        duration: float,
        bpm: float = 100.0,
        language: str | None = None,
        lyrics_format: str = "auto",
        start: float = 0.0,
    ) -> TimedLyrics:
        """Timed lines and ids; ``language`` None reads each line in the song's context (code-switching
        allowed). Lyrics with nothing pronounceable give an instrumental (no lines) and a note."""
        lines, source, parse_notes, layout_notes = _timed(text, duration, bpm, lyrics_format, start)
        sung = [index for index, line in enumerate(lines) if line.text.strip()]
        ids: list[list[int]] = [[] for _ in lines]
        unknown = 0
        if sung:
            phones = self.g2p.phonemize_lines([lines[i].text for i in sung], language=language)
            if not pronounceable(phones):  # nothing is placed, so where lines would have gone is moot
                note = (
                    f"no_pronounceable_lyrics: {len(sung)} line(s) hold nothing to sing (first: "
                    f"{lines[sung[0]].text!r}); sampled as an instrumental"
                )
                return TimedLyrics([], [], "none", 0, [*parse_notes, note])
            for index, line_phones in zip(sung, phones, strict=True):
                ids[index] = self.vocab.encode_sentence(line_phones)
                unknown += sum(1 for token in ids[index] if token == PhonemeVocab.UNK_ID)
        return TimedLyrics(lines, ids, source, unknown, parse_notes + layout_notes)
