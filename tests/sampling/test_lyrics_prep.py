"""Lyrics at sampling follow preparation's policies, and every dropped or changed line is noted."""

from __future__ import annotations

from pathlib import Path

import pytest

from refrain.data.lyric_fields import build_lyric_fields
from refrain.sampling.lyrics_prep import LyricsPreparer, timed_lines_with_notes
from refrain.text.g2p import G2P
from refrain.text.lrc import LrcLine, format_lrc
from refrain.text.vocab import PhonemeVocab

EMOJI_ONLY = ["🎵🎶 ✨\n💔💔 🔥\n", "[00:01.00]🎵🎵\n[00:03.50]✨ ✨ !!\n", "[verse]\n♪ ♪ ♪\n(...)\n"]
ONE_BAD_LINE = "[00:01.00]hello night\n[0x:12.00]broken stamp\n[00:04.00]we are singing\n"


@pytest.fixture(scope="module")
def g2p() -> G2P:
    return G2P()


def _prepared(text: str, duration: float, g2p: G2P):
    return build_lyric_fields(text, "auto", duration, None, lambda: g2p, PhonemeVocab())


@pytest.mark.parametrize("text", EMOJI_ONLY)
@pytest.mark.parametrize("seconds", [30.0, 1.0])  # 1 s: too short for the layout, still one note
def test_nothing_pronounceable_is_an_instrumental_in_both(text: str, seconds: float, g2p: G2P) -> None:
    timed = LyricsPreparer(PhonemeVocab(), g2p).prepare(text, seconds)
    assert (timed.lines, timed.phoneme_ids, timed.source) == ([], [], "none")
    assert timed.grid(50, 10.0).abs().sum() == 0  # no separator token is placed anywhere
    assert len(timed.notes) == 1 and timed.notes[0].startswith("no_pronounceable_lyrics")
    fields = _prepared(text, seconds, g2p)
    assert (fields.language, fields.phoneme_ids, fields.lrc) == ("instrumental", [], [])
    assert [issue.code for issue in fields.issues] == ["no_pronounceable_lyrics"]  # nothing about timing


def test_one_malformed_lrc_line_is_dropped_with_a_note_in_both(g2p: G2P) -> None:
    vocab = PhonemeVocab()
    fields = build_lyric_fields(ONE_BAD_LINE, "auto", 10.0, "en", lambda: g2p, vocab)
    timed = LyricsPreparer(vocab, g2p).prepare(ONE_BAD_LINE, 10.0, language="en")  # used to raise
    assert [line.text for line in timed.lines] == [line["text"] for line in fields.lrc]
    assert [line.text for line in timed.lines] == ["hello night", "we are singing"]
    assert timed.phoneme_ids == fields.phoneme_ids
    (issue,) = [issue for issue in fields.issues if issue.code == "malformed_lrc"]
    (note,) = timed.notes
    assert note in issue.message and "line 2" in note and "[mm:ss.xx]" in note


def test_lines_outside_a_short_request_are_counted() -> None:
    lines = [LrcLine(float(t), f"line at {t} seconds") for t in range(5, 216, 10)]  # timed to 215 s
    text = format_lrc(lines)
    kept, source, notes = timed_lines_with_notes(text, 10.0)
    assert source == "lrc" and len(kept) == len(lines) == 22
    assert notes == [
        "21 of 22 lyric lines start after 10 s (first: [00:15.00]line at 15 seconds); those lines are not sung"
    ]
    assert timed_lines_with_notes(text, 220.0)[2] == []


def test_real_english_lrc_in_a_ten_second_request(fixtures_dir: Path, g2p: G2P) -> None:
    text = (fixtures_dir / "diffrhythm_lrc" / "eg_en.lrc").read_text(encoding="utf-8")
    timed = LyricsPreparer(PhonemeVocab(), g2p).prepare(text, 10.0, language="en")
    common = "26 of 26 lyric lines start after 10 s (first: [00:10.00]Moonlight spills through broken blinds)"
    assert timed.notes == [f"{common}; those lines are not sung"]
    late = [i for i in _prepared(text, 10.0, g2p).issues if i.code == "lyrics_past_end"]
    assert len(late) == 1 and common in late[0].message  # the same sentence as preparation's


@pytest.mark.slow
def test_the_song_sidecar_carries_the_notes(tmp_path_factory: pytest.TempPathFactory) -> None:
    """A 1 s request with lyrics timed to 215 s, and one with only emoji, on a real (tiny) bundle."""
    from helpers.bundles import make_tiny_bundle

    from refrain.sampling.options import SamplerOptions
    from refrain.sampling.pipeline import Pipeline

    pipe = Pipeline.from_bundle(make_tiny_bundle(tmp_path_factory.mktemp("notes")))
    options = SamplerOptions(steps=2, guidance="cfg", guidance_scale=3.0, seed=3)
    lines = [LrcLine(float(t), f"line at {t} seconds") for t in range(0, 216, 5)]
    song = pipe.text2music("synth pop", format_lrc(lines), 1.0, options=options)
    assert song.sidecar["lyrics_notes"] == [
        "43 of 44 lyric lines start after 1 s (first: [00:05.00]line at 5 seconds); those lines are not sung"
    ]
    emoji = pipe.text2music("synth pop", EMOJI_ONLY[0], 1.0, options=options)
    assert emoji.sidecar["lyrics_source"] == "none" and emoji.sidecar["lyrics_timing"] == []
    (note,) = emoji.sidecar["lyrics_notes"]
    assert note.startswith("no_pronounceable_lyrics: 2 line(s) hold nothing to sing")


def test_structured_lyrics_squeezed_into_a_short_request_say_so() -> None:
    text = "[verse]\n" + "\n".join(f"this is line number {i} of the song" for i in range(40))
    lines, source, notes = timed_lines_with_notes(text, 10.0, bpm=100.0)
    assert source == "estimated" and lines[-1].time < 10.0
    (note,) = notes
    assert note.startswith("40 lyric lines laid out at 100 bpm would run to ")
    assert "squeezed into 10 s" in note
    assert timed_lines_with_notes(text, 400.0, bpm=100.0)[2] == []  # room enough: no squeeze, no note
