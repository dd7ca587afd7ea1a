"""ACE-Step structured lyrics: `[verse]`-style section tags, blank lines between paragraphs.

Also lays out rough line times for lyrics that have none (dataset prep, the sampler), so every
song can use DiffRhythm's sentence-level alignment.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from refrain.errors import RefrainInputError
from refrain.text.lrc import LrcLine
from refrain.text.scripts import CYRILLIC, HAN, HANGUL, KANA, LATIN, char_script

# A leading bracket group that names something (has a letter): `[Verse 1]`, `[chorus: Artist]`.
# Timestamps (`[00:12.00]`) have no letter and are not section tags.
_LEADING_TAG = re.compile(r"^\[([^\[\]]*[^\W\d_][^\[\]]*)\]\s*(.*)$")
_VOWELS = set("aeiouyàáâãäåæèéêëìíîïòóôõöøùúûüýÿœаеёиоуыэюяіїє")
_SMALL_KANA = set("ゃゅょぁぃぅぇぉゎャュョァィゥェォヮ")


@dataclass
class LyricLine:
    """One sung line, the section it sits in (lower-cased tag name, None before any tag), and its
    paragraph index (blocks split by blank lines or tags, counted from 0; used for timing gaps)."""

    text: str
    section: str | None
    paragraph: int = 0


def _split_tag(line: str) -> tuple[str, str] | None:
    """(tag text, rest of line) if the line starts with a section tag."""
    match = _LEADING_TAG.match(line)
    if match is None:
        return None
    return " ".join(match[1].split()), match[2].strip()


def normalize_lyrics(text: str) -> str:
    """ACE-Step-style normalised lyrics: lines trimmed, inner whitespace collapsed (full-width
    spaces too), tags on their own lines (`[Verse 1] hi` -> two lines), at most one blank line in a
    row, none at the start or end, LF line ends."""
    out: list[str] = []
    for raw in text.lstrip("\ufeff").splitlines():
        line = " ".join(raw.split())
        tag = _split_tag(line) if line else None
        parts = [f"[{tag[0]}]", tag[1]] if tag and tag[1] else [f"[{tag[0]}]"] if tag else [line]
        for part in parts:
            if part or (out and out[-1]):
                out.append(part)
    while out and not out[-1]:
        out.pop()
    return "\n".join(out)


def section_name(tag: str) -> str:
    """`Verse 1` -> `verse 1`; `Chorus: Artist` -> `chorus` (the performer note is not the section)."""
    return " ".join(tag.split(":", 1)[0].lower().split())


def parse_structured_lyrics(text: str) -> list[LyricLine]:
    """Sung lines of ACE-Step lyrics with their section and paragraph; tag and blank lines give none."""
    lines: list[LyricLine] = []
    section: str | None = None
    paragraph, new_paragraph = -1, True
    for line in normalize_lyrics(text).split("\n"):
        tag = _split_tag(line)
        if tag is not None:
            section, new_paragraph = section_name(tag[0]) or None, True
        elif not line:
            new_paragraph = True
        else:
            if new_paragraph:
                paragraph, new_paragraph = paragraph + 1, False
            lines.append(LyricLine(text=line, section=section, paragraph=paragraph))
    return lines


def count_syllables(text: str) -> int:
    """Syllable-ish count: one per Han/kana/Hangul character (small kana excluded), vowel groups per
    Latin or Cyrillic word (at least one per word), one per digit."""
    count, in_vowels, word_vowels, in_word = 0, False, 0, False
    for ch in unicodedata.normalize("NFKC", text):
        script = char_script(ch)
        if script in (LATIN, CYRILLIC):
            in_word = True
            vowel = ch.lower() in _VOWELS
            if vowel and not in_vowels:
                word_vowels += 1
            in_vowels = vowel
            continue
        if in_word:
            count += max(1, word_vowels)
        in_word, in_vowels, word_vowels = False, False, 0
        if (
            script in (HAN, HANGUL)
            or (script == KANA and ch not in _SMALL_KANA and ch != "ー")
            or ch.isdigit()
        ):
            count += 1
    if in_word:
        count += max(1, word_vowels)
    return count


def estimate_line_times(
    lines: Sequence[LyricLine],
    duration: float | None = None,
    bpm: float = 100.0,
    start: float = 0.0,
    *,
    beats_per_bar: int = 4,
    syllables_per_beat: float = 2.0,
) -> list[LrcLine]:
    """Rough start times for lyrics without timestamps.

    Each line lasts ceil(syllables / syllables_per_beat) beats (at least one) plus a one-beat breath;
    a new paragraph or section (and a first line that follows a tag) is preceded by a gap of one bar.
    With `duration`, the layout from `start` to the end of the last line is scaled (stretched or
    squeezed) to end exactly at `duration`.
    """
    if not bpm > 0:
        raise RefrainInputError("bpm", f"{bpm} is not a positive tempo", "pass beats per minute, e.g. 100")
    if duration is not None and not duration > start:
        raise RefrainInputError(
            "duration",
            f"{duration} s does not end after the start {start} s",
            "pass the song's length in seconds",
        )
    if not lines:
        return []
    beat = 60.0 / bpm
    times: list[float] = []
    cursor, end = start, start
    previous: LyricLine | None = None
    for line in lines:
        if previous is None:
            boundary = line.section is not None
        else:
            boundary = line.paragraph != previous.paragraph or line.section != previous.section
        if boundary:
            cursor += beats_per_bar * beat
        times.append(cursor)
        beats = max(1, math.ceil(count_syllables(line.text) / syllables_per_beat))
        end = cursor + beats * beat
        cursor = end + beat
        previous = line
    scale = 1.0 if duration is None else (duration - start) / (end - start)
    return [
        LrcLine(time=round(start + (t - start) * scale, 3), text=line.text)
        for t, line in zip(times, lines, strict=True)
    ]
