"""Whole preparation runs over lyric files that used to be damaged silently: GBK bytes, emoji only."""

from __future__ import annotations

from pathlib import Path

from refrain.data.prepare import PrepareOptions, prepare_dataset
from refrain.data.schema import load_prepared


def _rows(out: Path) -> dict[str, dict]:
    return {row["keys"]: row for split in load_prepared(out).values() for row in split}


def test_gbk_lyrics_and_tags_are_decoded_and_noted(tmp_path: Path, fixtures_dir: Path, write_audio) -> None:
    """ACE-Step's own lyrics and prompt, re-saved by a Chinese Windows editor (GBK), beside a UTF-8 copy."""
    music = tmp_path / "music"
    fixture = fixtures_dir / "acestep_folder"
    lyrics = (fixture / "test_track_001_lyrics.txt").read_text(encoding="utf-8")
    prompt = (fixture / "test_track_001_prompt.txt").read_text(encoding="utf-8") + ", 中文说唱"
    for name, codec in (("utf8", "utf-8"), ("gbk", "gbk")):
        write_audio(music / f"{name}.wav", seconds=20.0, sample_rate=8000, channels=1)
        (music / f"{name}_lyrics.txt").write_bytes(lyrics.encode(codec))
        (music / f"{name}_prompt.txt").write_bytes(prompt.encode(codec))
    result = prepare_dataset(
        PrepareOptions(output_dir=tmp_path / "ds", source="acestep", input_dir=music, progress=False)
    )
    rows = _rows(tmp_path / "ds")
    gbk, utf8 = rows["gbk"], rows["utf8"]
    assert "\ufffd" not in gbk["norm_lyrics"] and gbk["language"] == "zh"
    for field in ("norm_lyrics", "lrc", "phoneme_ids", "language", "tags"):
        assert gbk[field] == utf8[field], field
    assert gbk["tags"][-1] == "中文说唱"
    assert result.report["notes_by_reason"]["text_encoding"] == 1
    (entry,) = [n for n in result.report["noted"] if n["file"].endswith("gbk.wav")]
    messages = [i["message"] for i in entry["issues"] if i["code"] == "text_encoding"]
    assert sorted(messages) == sorted(
        f"a lyrics or tags file is not UTF-8; it was decoded with the encoding named ({name}: decoded as gb18030)"
        for name in ("gbk_lyrics.txt", "gbk_prompt.txt")
    )
    assert "gbk_lyrics.txt: decoded as gb18030" in result.report_text


def test_emoji_only_lyrics_make_an_instrumental_with_a_note(tmp_path: Path, write_audio) -> None:
    music = tmp_path / "music"
    write_audio(music / "emoji.wav", seconds=3.0, freq=300)
    (music / "emoji.lrc").write_text("[00:00.50]🎵🎶🎵\n[00:01.50]✨💔 🔥\n", encoding="utf-8")
    write_audio(music / "sung.wav", seconds=3.0, freq=500)
    (music / "sung.lrc").write_text("[00:00.50]hello night\n[00:01.50]🎵🎵\n", encoding="utf-8")
    result = prepare_dataset(
        PrepareOptions(output_dir=tmp_path / "ds", source="lrc", input_dir=music, progress=False)
    )
    rows = _rows(tmp_path / "ds")
    emoji = rows["emoji"]
    assert (emoji["language"], emoji["phoneme_ids"], emoji["lrc"], emoji["lrc_source"]) == (
        "instrumental",
        [],
        [],
        "none",
    )
    assert (
        rows["sung"]["language"] == "en" and len(rows["sung"]["phoneme_ids"]) == 2
    )  # one emoji line is fine
    assert result.report["notes_by_reason"] == {"no_pronounceable_lyrics": 1, "no_tags": 2}
    (line,) = [line for line in result.report_text.splitlines() if "emoji.wav:" in line]
    assert "no_pronounceable_lyrics: the lyrics hold nothing G2P can pronounce" in line


def test_lyrics_only_in_an_unreadable_script_are_an_instrumental_too() -> None:
    from refrain.data.lyric_fields import build_lyric_fields
    from refrain.text.g2p import G2P
    from refrain.text.vocab import PhonemeVocab

    g2p = G2P()
    fields = build_lyric_fields(
        "[00:01.00]สวัสดีครับ\n[00:02.00]🎵", "lrc", 5.0, None, lambda: g2p, PhonemeVocab()
    )
    assert (fields.language, fields.phoneme_ids, fields.lrc) == ("instrumental", [], [])
    assert [issue.code for issue in fields.issues] == ["unsupported_script", "no_pronounceable_lyrics"]
    assert "a script it cannot read" in fields.issues[1].message
