"""Lines are read in their song's language; a line switches only on evidence, so one word, one reading."""

from __future__ import annotations

from refrain.text.g2p import G2P, WORD_BOUNDARY
from refrain.text.scripts import SongContext, line_language, song_context

# An English song whose refrain is vocables that look Portuguese/Spanish to a line-by-line guess.
ENGLISH_SONG = [
    "[Chorus]",
    "Abracadabra ama-ooh-na-na",
    "Abracadabra, I know what you do",
    "I want to hold you close tonight",
    "oh na na na",
    "Abracadabra ama-ooh-na-na",
    "Te quiero, mi amor, la noche es nuestra",
]


def _first_word(phones: list[str]) -> list[str]:
    return phones[: phones.index(WORD_BOUNDARY)] if WORD_BOUNDARY in phones else phones


def test_vocable_lines_follow_the_song(g2p: G2P) -> None:
    context = song_context(ENGLISH_SONG)
    assert context == SongContext("en", "en")
    languages = [line_language(line, context) for line in ENGLISH_SONG[1:]]
    assert languages == ["en", "en", "en", "en", "en", "es"]  # the Spanish line switches on its evidence
    phones = g2p.phonemize_lines(ENGLISH_SONG)
    abracadabra = {tuple(_first_word(phones[i])) for i in (1, 2, 5)}
    assert len(abracadabra) == 1  # the same word, the same phonemes, in every line of the song
    assert set(next(iter(abracadabra))) & set("æɹə")  # read as English
    assert phones[1] == phones[5]


def test_a_line_alone_has_no_song_to_follow(g2p: G2P) -> None:
    """Phonemized on its own, the refrain has no evidence for any language: English (the default)."""
    assert g2p.phonemize_lines([ENGLISH_SONG[1]]) == [g2p.phonemize_lines(ENGLISH_SONG)[1]]


def test_portuguese_song_keeps_its_vocables_portuguese() -> None:
    song = ["Eu não sei o que fazer, meu coração", "na na na", "Abracadabra ama-ooh-na-na", "I love you baby"]
    context = song_context(song)
    assert context == SongContext("pt", "pt")
    assert [line_language(line, context) for line in song] == ["pt", "pt", "pt", "en"]


def test_kanji_only_line_in_a_japanese_song(g2p: G2P) -> None:
    song = ["さくらが咲いた", "東京", "夜空に光る"]
    context = song_context(song)
    assert context.language == "ja" and line_language("東京", context) == "ja"
    assert g2p.phonemize_lines(song)[1] == g2p.phonemize("東京", language="ja")
    assert song_context(["让我掉下眼泪的", "东京"]).language == "zh"


def test_code_switched_chinese_song_reads_latin_words_as_english() -> None:
    context = song_context(["硅谷 那个 coder 调试 neural network", "让我掉下眼泪的", "oh na na na"])
    assert context == SongContext("zh", "en")
    assert line_language("oh na na na", context) == "en"


def test_repeated_vocables_are_one_piece_of_evidence() -> None:
    assert song_context(["oh na na na na na"]).latin == "en"
    assert song_context(["la la la"], default="fr") == SongContext("fr", "fr")
