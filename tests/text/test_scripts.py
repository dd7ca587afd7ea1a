"""Script classification, language detection and code-switch runs."""

from __future__ import annotations

import pytest

from refrain.errors import RefrainInputError
from refrain.text.scripts import (
    CYRILLIC,
    HAN,
    HANGUL,
    KANA,
    LATIN,
    Run,
    UnsupportedScriptError,
    char_script,
    detect_language,
    detect_latin_language,
    split_runs,
)


@pytest.mark.parametrize(
    ("ch", "script"),
    [
        ("a", LATIN),
        ("é", LATIN),
        ("中", HAN),
        ("々", HAN),
        ("カ", KANA),
        ("ー", KANA),
        ("한", HANGUL),
        ("ж", CYRILLIC),
    ],
)
def test_char_script(ch: str, script: str) -> None:
    assert char_script(ch) == script


@pytest.mark.parametrize("ch", ["1", " ", ",", "。", "・", "!", "\u0301", "♪"])
def test_neutral_characters(ch: str) -> None:
    assert char_script(ch) is None


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("Moonlight spills through broken blinds", "en"),
        ("El corazón late fuerte en la noche", "es"),
        ("Je t'aime encore, mon cœur est à toi", "fr"),
        ("Ich liebe dich über alles in der Nacht", "de"),
        ("Eu não sei o que fazer, meu coração", "pt"),
        ("Ti amo ancora, il mio cuore è tuo", "it"),
        ("Я люблю тебя", "ru"),
        ("사랑해요", "ko"),
        ("さくらが咲いた", "ja"),
        ("让我掉下眼泪的", "zh"),
        ("硅谷 那个 coder 调试 neural network", "zh"),
        ("123 !!", "en"),
    ],
)
def test_detect_language(text: str, language: str) -> None:
    assert detect_language(text) == language


def test_detect_language_defaults() -> None:
    assert detect_language("東京", default="ja") == "ja"  # kanji-only text follows a Japanese default
    assert detect_language("la la la", default="fr") == "fr"  # no evidence: the default stands
    assert detect_latin_language("no way", default="en") == "en"  # one ambiguous stop-word is not enough
    with pytest.raises(RefrainInputError, match="unknown language"):
        detect_language("hello", default="xx")


@pytest.mark.parametrize(
    ("text", "script"), [("สวัสดีครับ", "THAI"), ("hello مرحبا", "ARABIC"), ("αβγ", "GREEK")]
)
def test_unsupported_script(text: str, script: str) -> None:
    with pytest.raises(UnsupportedScriptError) as info:
        split_runs(text)
    message = str(info.value)
    assert script in message and "--language" in message and "drop the line" in message
    assert "\n" not in message
    assert isinstance(info.value, RefrainInputError)


def test_detect_language_ignores_a_stray_unsupported_line() -> None:
    assert detect_language("I love you\nสวัสดีครับ\nyou love me") == "en"
    with pytest.raises(UnsupportedScriptError, match="THAI"):
        detect_language("สวัสดีครับ")


def test_split_runs_code_switched() -> None:
    assert split_runs("硅谷 那个 coder 调试 neural network") == [
        Run("zh", "硅谷 那个"),
        Run("en", "coder"),
        Run("zh", "调试"),
        Run("en", "neural network"),
    ]
    assert split_runs("你说 996 我说 007") == [Run("zh", "你说 996 我说 007")]
    assert split_runs("東京タワーで love you") == [Run("ja", "東京タワーで"), Run("en", "love you")]
    assert split_runs("오늘 밤 tonight") == [Run("ko", "오늘 밤"), Run("en", "tonight")]
    assert split_runs("El amor 爱情", language="es") == [Run("es", "El amor"), Run("zh", "爱情")]
    assert split_runs("東京", language="ja") == [Run("ja", "東京")]
    assert split_runs("42", language="fr") == [Run("fr", "42")]
    assert split_runs("...") == []
