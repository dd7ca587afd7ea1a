"""LRC parsing: dialects, tags, offset sign, malformed lines, the two DiffRhythm example files."""

from __future__ import annotations

import pytest

from refrain.errors import RefrainInputError
from refrain.text.lrc import LrcLine, format_lrc, format_timestamp, load_lrc, looks_like_lrc, parse_lrc


def test_timestamp_dialects() -> None:
    parsed = parse_lrc("[00:01]one\n[00:02.5]two\n[00:03.25]three\n[00:04.125]four\n[01:05:50]five\n")
    assert [(line.time, line.text) for line in parsed.lines] == [
        (1.0, "one"),
        (2.5, "two"),
        (3.25, "three"),
        (4.125, "four"),
        (65.5, "five"),
    ]
    assert parsed.malformed == []


def test_multiple_timestamps_repeat_the_line_and_everything_is_sorted() -> None:
    parsed = parse_lrc("[00:45.30]later\n[00:12.00][00:50.00]chorus\n[00:05.00]first\n")
    assert [(line.time, line.text) for line in parsed.lines] == [
        (5.0, "first"),
        (12.0, "chorus"),
        (45.3, "later"),
        (50.0, "chorus"),
    ]


def test_tags_bom_crlf_and_gaps() -> None:
    text = "\ufeff[ar:Someone]\r\n[ti: A Song ]\r\n[al:Album]\r\n[by:me]\r\n[00:01.00]hello\r\n[00:03.00]\r\n[00:04.00]  \r\n"
    parsed = parse_lrc(text, source="song.lrc")
    assert parsed.tags == {"ar": "Someone", "ti": "A Song", "al": "Album", "by": "me"}
    assert parsed.lines == [LrcLine(1.0, "hello")]  # empty-text lines (instrumental gaps) dropped
    assert parsed.malformed == []
    assert parsed.source == "song.lrc"


@pytest.mark.parametrize(("offset", "expected"), [("+500", 9.5), ("500", 9.5), ("-250", 10.25), ("0", 10.0)])
def test_offset_positive_makes_lyrics_earlier(offset: str, expected: float) -> None:
    parsed = parse_lrc(f"[offset:{offset}]\n[00:10.00]line\n[00:00.20]early\n")
    assert parsed.lines[1].time == pytest.approx(expected)
    assert parsed.lines[0].time == (
        0.0 if offset in ("+500", "500") else pytest.approx(0.2 - int(offset) / 1000)
    )
    assert parsed.tags["offset"] == offset


def test_bad_offset_is_reported_and_ignored() -> None:
    parsed = parse_lrc("[00:10.00]line\n[offset:soon]\n")
    assert parsed.lines == [LrcLine(10.0, "line")]
    assert parsed.malformed == [(2, "bad offset tag value 'soon' (milliseconds expected)")]


def test_malformed_lines_are_skipped_and_reported() -> None:
    text = "\n".join(
        [
            "[00:01.00]good",
            "[1:2x.00]bad stamp",
            "[00:75.00]too many seconds",
            "[100:00.00]too many minutes",
            "no timestamp at all",
            "[00:02.00][0x:03.00]half good",
            "[verse]",
            "[00:03.00]also good",
        ]
    )
    parsed = parse_lrc(text)
    assert [line.text for line in parsed.lines] == ["good", "also good"]
    numbers = [number for number, _ in parsed.malformed]
    assert numbers == [2, 3, 4, 5, 6, 7]
    reasons = dict(parsed.malformed)
    assert "bad timestamp" in reasons[2] and "[1:2x.00]" in reasons[2]
    assert "seconds out of range" in reasons[3]
    assert "minutes out of range" in reasons[4]
    assert reasons[5] == "text without a timestamp"


def test_enhanced_word_times_are_stripped() -> None:
    parsed = parse_lrc("[00:12.00]<00:12.00>hello <00:12.50>world\n")
    assert parsed.lines == [LrcLine(12.0, "hello world")]


def test_format_roundtrip_and_rounding() -> None:
    lines = [LrcLine(0.0, "a"), LrcLine(59.999, "b"), LrcLine(125.25, "c")]
    text = format_lrc(lines, tags={"ti": "T", "offset": "300"})
    assert text.splitlines() == ["[ti:T]", "[00:00.00]a", "[01:00.00]b", "[02:05.25]c"]
    again = parse_lrc(text)
    assert [(round(line.time, 2), line.text) for line in again.lines] == [
        (0.0, "a"),
        (60.0, "b"),
        (125.25, "c"),
    ]
    assert format_timestamp(3599.994) == "[59:59.99]"


def test_looks_like_lrc() -> None:
    assert looks_like_lrc("[ar:x]\n[00:01.00]a\n[00:02.00]b\n")
    assert not looks_like_lrc("[verse]\nhello\nworld\n")


def test_load_lrc_errors(tmp_path) -> None:
    with pytest.raises(RefrainInputError, match="file not found"):
        load_lrc(tmp_path / "missing.lrc")
    latin1 = tmp_path / "latin1.lrc"
    latin1.write_bytes("[00:01.00]caf\xe9".encode("latin-1"))
    assert load_lrc(latin1).lines == [LrcLine(1.0, "café")]  # a legacy encoding that fits is read
    bad = tmp_path / "binary.lrc"
    bad.write_bytes(b"[00:01.00]\x00\x81\x8d\xff\xfe\x00\x9d")
    with pytest.raises(RefrainInputError, match="re-save it as UTF-8"):
        load_lrc(bad)


def test_fixture_english(fixtures_dir) -> None:
    parsed = load_lrc(fixtures_dir / "diffrhythm_lrc" / "eg_en.lrc")
    assert parsed.malformed == []
    assert len(parsed.lines) == 26
    assert parsed.lines[0] == LrcLine(10.0, "Moonlight spills through broken blinds")
    assert parsed.lines[-1] == LrcLine(147.9, "Your name echoes in the hollow where my heartbeat lies")
    times = [line.time for line in parsed.lines]
    assert times == sorted(times)


def test_fixture_chinese(fixtures_dir) -> None:
    parsed = load_lrc(fixtures_dir / "diffrhythm_lrc" / "eg_cn.lrc")
    assert parsed.malformed == []
    assert len(parsed.lines) == 16
    assert parsed.lines[0] == LrcLine(18.23, "让我掉下眼泪的")
    assert parsed.lines[-1] == LrcLine(83.51, "和我在成都的街头走一走")
