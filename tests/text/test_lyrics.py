"""Structured lyrics: tags, paragraphs, normalisation, and estimated line times."""

from __future__ import annotations

import math
from itertools import pairwise

import pytest

from refrain.errors import RefrainInputError
from refrain.text.lyrics import (
    LyricLine,
    count_syllables,
    estimate_line_times,
    normalize_lyrics,
    parse_structured_lyrics,
)

SONG = """
[Verse 1]
  hello   world\r
second line

[CHORUS]  sing it
[bridge: Guest]
[00:12.00] not a tag

third\u3000 paragraph



"""


def test_normalize_lyrics() -> None:
    assert normalize_lyrics(SONG) == (
        "[Verse 1]\nhello world\nsecond line\n\n[CHORUS]\nsing it\n[bridge: Guest]\n"
        "[00:12.00] not a tag\n\nthird paragraph"
    )
    assert normalize_lyrics("\ufeff[ intro ]\n\n\n") == "[intro]"


def test_parse_structured_lyrics_sections_and_paragraphs() -> None:
    assert parse_structured_lyrics(SONG) == [
        LyricLine("hello world", "verse 1", 0),
        LyricLine("second line", "verse 1", 0),
        LyricLine("sing it", "chorus", 1),
        LyricLine("[00:12.00] not a tag", "bridge", 2),
        LyricLine("third paragraph", "bridge", 3),
    ]
    assert parse_structured_lyrics("no tags\n\nat all") == [
        LyricLine("no tags", None, 0),
        LyricLine("at all", None, 1),
    ]
    assert parse_structured_lyrics("[verse]\n[chorus]\n") == []


@pytest.mark.parametrize(
    ("text", "count"),
    [
        ("hello world", 3),
        ("Я люблю тебя", 5),
        ("硅谷 那个 coder", 6),
        ("きょうは", 3),
        ("사랑해", 3),
        ("996", 3),
        ("", 0),
    ],
)
def test_count_syllables(text: str, count: int) -> None:
    assert count_syllables(text) == count


def test_estimate_line_times_layout() -> None:
    lines = [
        LyricLine("la la la la", "verse", 0),
        LyricLine("la la", "verse", 0),
        LyricLine("la", "chorus", 1),
    ]
    beat = 60.0 / 120.0
    times = [line.time for line in estimate_line_times(lines, bpm=120.0, start=2.0)]
    # first line follows a tag: one bar (4 beats) gap; 4 syllables = 2 beats + 1 beat breath; 2 syllables =
    # 1 beat + 1 beat breath; new section: +1 bar.
    assert times == [2.0 + 4 * beat, 2.0 + 7 * beat, 2.0 + 9 * beat + 4 * beat]
    assert [line.text for line in estimate_line_times(lines)] == ["la la la la", "la la", "la"]


def test_estimate_line_times_scales_to_duration() -> None:
    lines = [LyricLine(f"line number {i}", None, i // 2) for i in range(6)]
    natural = estimate_line_times(lines, bpm=100.0)
    for duration in (10.0, 200.0):
        fitted = estimate_line_times(lines, duration=duration, bpm=100.0)
        ratios = [f.time / n.time for f, n in zip(fitted[1:], natural[1:], strict=True)]
        assert ratios == pytest.approx([ratios[0]] * len(ratios), rel=1e-3)  # one uniform scale
        assert fitted[-1].time < duration
        assert all(a.time < b.time for a, b in pairwise(fitted))
    # the last line ends at `duration`: its start plus its scaled length in beats (2 syllables per beat)
    fitted = estimate_line_times(lines, duration=60.0, bpm=100.0)
    scale = fitted[-1].time / natural[-1].time
    beats = math.ceil(count_syllables(lines[-1].text) / 2)
    assert fitted[-1].time + beats * 0.6 * scale == pytest.approx(60.0, abs=2e-3)


def test_estimate_line_times_fixture(fixtures_dir) -> None:
    text = (fixtures_dir / "acestep_folder" / "test_track_001_lyrics.txt").read_text(encoding="utf-8")
    lines = parse_structured_lyrics(text)
    assert lines[0] == LyricLine('"System booting... 语言 模型 loading..."', "intro", 0)
    assert lines[1].section == "verse 1"
    assert {line.section for line in lines} >= {"intro", "verse 1", "bridge", "chorus", "outro"}
    timed = estimate_line_times(lines, duration=60.0)
    assert len(timed) == len(lines) == 45
    assert 0.0 < timed[0].time < timed[-1].time < 60.0


def test_estimate_line_times_bad_input() -> None:
    assert estimate_line_times([]) == []
    with pytest.raises(RefrainInputError, match="duration"):
        estimate_line_times([LyricLine("a", None)], duration=1.0, start=5.0)
    with pytest.raises(RefrainInputError, match="bpm"):
        estimate_line_times([LyricLine("a", None)], bpm=0.0)
