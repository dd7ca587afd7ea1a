"""Text files in legacy encodings are decoded by a validated fallback chain, and the choice is named."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from refrain.text.encoding import decode_text, describe_encoding, read_text_with_encoding

ZH = "[Verse]\n让我掉下眼泪的 不止昨夜的酒\n硅谷 那个 coder 调试 neural network，你好吗？\n"
ZH_TW = "[Verse]\n讓我掉下眼淚的 不止昨夜的酒\n我們一起走過的時光，還記得嗎？\n"
JA = "[Verse]\nさくらが咲いた 東京の夜に\nあなたを想う、ずっと。\n"
KO = "[Verse]\n오늘 밤 사랑해요 tonight\n우리 함께 걸어요\n"
DE = "Ich liebe dich über alles, Straße, schön\n"
FR = "Je t'aime encore, mon cœur est à toi — élan, déjà vu, naïve café\n"


@pytest.mark.parametrize(
    ("text", "codec", "expected"),
    [
        (ZH, "gbk", "gb18030"),
        (ZH, "gb18030", "gb18030"),
        (ZH_TW, "big5", "big5"),
        (JA, "shift_jis", "shift_jis"),
        (KO, "euc_kr", "euc_kr"),
        (FR, "cp1252", "cp1252"),
        (DE, "latin-1", "cp1252"),
        (ZH, "utf-16", "utf-16"),
        (ZH, "utf-8-sig", "utf-8-sig"),
        (FR, "utf-8", "utf-8"),
    ],
)
def test_each_encoding_is_recognised(text: str, codec: str, expected: str) -> None:
    decoded, encoding = decode_text(text.encode(codec))
    assert (decoded, encoding) == (text, expected)


def test_nothing_fits_gives_replacements_and_says_so() -> None:
    data = b"\x00\x81\x8d\xff\xfe\x00\x9d" + os.urandom(64)
    text, encoding = decode_text(b"x" + data)
    assert encoding is None and "\ufffd" in text
    note = describe_encoding(None)
    assert note is not None and "gb18030" in note and "replaced" in note
    assert describe_encoding("utf-8") is None and describe_encoding("gb18030") == "decoded as gb18030"


def test_real_chinese_lrc_saved_as_gbk(fixtures_dir: Path, tmp_path: Path) -> None:
    """DiffRhythm's Chinese LRC and ACE-Step's code-switched lyrics, re-saved by a GBK editor."""
    lyrics = sorted((fixtures_dir / "acestep_folder").glob("*_lyrics.txt"))
    for source in (fixtures_dir / "diffrhythm_lrc" / "eg_cn.lrc", *lyrics):
        original = source.read_text(encoding="utf-8")
        gbk = tmp_path / source.name
        gbk.write_bytes(original.encode("gbk"))
        assert read_text_with_encoding(gbk) == (original, "gb18030")
