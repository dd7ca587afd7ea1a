"""G2P over ten languages, code-switched lines, the ACE-Step fixture, batching and errors."""

from __future__ import annotations

import re
import time

import pytest

from refrain.errors import RefrainInputError
from refrain.text.chinese import chinese_words
from refrain.text.g2p import G2P, UnsupportedScriptError, detect_language
from refrain.text.japanese import kana_words
from refrain.text.lyrics import parse_structured_lyrics
from refrain.text.vocab import WORD_BOUNDARY, PhonemeVocab

SAMPLES = {
    "en": "Moonlight spills through broken blinds",
    "zh": "让我 掉下 眼泪的 不止 昨夜的酒",
    "ja": "東京の空は青い、さくらが咲いた",
    "ko": "사랑해요 오늘 밤에 함께 있어요",
    "es": "El corazón late fuerte en la noche",
    "fr": "Je t'aime encore, mon cœur est à toi",
    "de": "Ich liebe dich über alles in der Nacht",
    "pt": "Eu não sei o que fazer, meu coração",
    "it": "Ti amo ancora, il mio cuore è tuo",
    "ru": "Я люблю тебя, ночь над городом",
}
PINYIN_FINAL = re.compile(r"^[a-zêü]+[1-5]$")
# Phones only IPA output has (espeak), never pinyin tokens.
IPA_ONLY = set("ɪʊəɚɹæʌɑɔθðŋʃʒɛɜɐ")
STRESS = set("ˈˌ'\"")


@pytest.mark.parametrize("language", list(SAMPLES))
def test_every_language_gives_phonemes(g2p: G2P, language: str) -> None:
    text = SAMPLES[language]
    assert detect_language(text) == language
    for phones in (g2p.phonemize(text), g2p.phonemize(text, language=language)):
        assert len(phones) >= 10
        assert phones.count(WORD_BOUNDARY) >= 2
        assert phones[0] != WORD_BOUNDARY and phones[-1] != WORD_BOUNDARY
        assert all(p and p == p.strip() and not (set(p) & STRESS) for p in phones)


def test_english_phones(g2p: G2P) -> None:
    assert g2p.phonemize("I love you", language="en") == [
        "aɪ",
        WORD_BOUNDARY,
        "l",
        "ʌ",
        "v",
        WORD_BOUNDARY,
        "j",
        "uː",
    ]


def test_spelled_capitals_are_read_as_letters(g2p: G2P) -> None:
    assert g2p.phonemize("A I", language="en") == ["eɪ", "aɪ"]
    assert g2p.phonemize("G.P.U.", language="en") == g2p.phonemize("GPU", language="en")
    assert g2p.phonemize("OK I see", language="en") != g2p.phonemize("OKI see", language="en")


def test_chinese_phones_are_pinyin_with_tones(g2p: G2P) -> None:
    assert g2p.phonemize("你好 世界") == ["n", "i3", "h", "ao3", WORD_BOUNDARY, "sh", "i4", "j", "ie4"]
    assert chinese_words("长大 长度 一儿 嗯") == [
        ["zh", "ang3", "d", "a4"],
        ["ch", "ang2", "d", "u4"],
        ["i1", "er2"],
        ["n2"],
    ]
    assert chinese_words("996") == [["j", "iou3", "j", "iou3", "l", "iou4"]]


def test_japanese_kanji_are_read_through_kana(g2p: G2P) -> None:
    assert kana_words("東京タワーは") == ["とうきょう", "たわー", "わ"]
    kanji = g2p.phonemize("東京", language="ja")
    assert kanji == g2p.phonemize("とうきょう")
    assert g2p.phonemize("東京") == ["d", "ong1", "j", "ing1"]  # without a hint, Han alone reads as Chinese
    assert "ɯᵝ" in kanji


def test_code_switched_line_has_pinyin_and_english(g2p: G2P) -> None:
    phones = g2p.phonemize("硅谷 那个 coder 调试 neural network")
    words = " ".join(phones).split(f" {WORD_BOUNDARY} ")
    assert words[:2] == ["g uei1 g u3", "n a4 g e5"]
    assert words[3] == "t iao2 sh i4"
    english = " ".join(words[2:3] + words[4:]).split()
    assert set(english) & IPA_ONLY and not any(PINYIN_FINAL.match(p) for p in english)
    assert len(words) == 6


def test_fixture_lyrics_phonemize(g2p: G2P, fixtures_dir) -> None:
    text = (fixtures_dir / "acestep_folder" / "test_track_001_lyrics.txt").read_text(encoding="utf-8")
    lines = parse_structured_lyrics(text)
    batched = g2p.phonemize_lines([line.text for line in lines])
    assert len(batched) == len(lines) == 45
    assert all(batched), "every sung line of the fixture gives phonemes"
    assert batched == [g2p.phonemize(line.text) for line in lines]  # batching changes nothing
    flat = [p for phones in batched for p in phones]
    assert sum(bool(PINYIN_FINAL.match(p)) for p in flat) > 200
    assert len(set(flat) & IPA_ONLY) >= 8
    vocab = PhonemeVocab()
    ids = [vocab.encode_sentence(phones, grow=True) for phones in batched]
    assert all(ids_[-1] == vocab.SENTENCE_END_ID and vocab.UNK_ID not in ids_ for ids_ in ids)
    whole = g2p.phonemize(text)  # tag lines are skipped, lines joined by word boundaries
    assert whole == [p for i, phones in enumerate(batched) for p in ([WORD_BOUNDARY] if i else []) + phones]


def test_batched_throughput(g2p: G2P) -> None:
    lines = [SAMPLES[lang] for lang in SAMPLES] * 20
    g2p.phonemize_lines(lines)  # every backend created
    start = time.perf_counter()
    out = g2p.phonemize_lines(lines)
    elapsed = time.perf_counter() - start
    assert len(out) == 200 and all(out)
    assert 200 / elapsed > 200, f"{200 / elapsed:.0f} lines/s"


def test_tags_punctuation_and_empty(g2p: G2P) -> None:
    assert g2p.phonemize("[Chorus]") == []
    assert g2p.phonemize("[Verse 1] [00:12.00] hello") == g2p.phonemize("hello")
    assert g2p.phonemize("  ...  ") == []
    assert g2p.phonemize_lines(["", "[verse]", "(yeah!)"], language="en")[:2] == [[], []]
    assert g2p.phonemize("(yeah!)") == g2p.phonemize("yeah")


def test_unsupported_script_and_bad_language(g2p: G2P) -> None:
    with pytest.raises(UnsupportedScriptError, match="THAI"):
        g2p.phonemize("love สวัสดี")
    with pytest.raises(UnsupportedScriptError, match="ARABIC"):
        g2p.phonemize("مرحبا", language="en")
    with pytest.raises(RefrainInputError, match="unknown language"):
        g2p.phonemize("hello", language="klingon")
    with pytest.raises(RefrainInputError, match="unknown language"):
        G2P(default_language="xx")
