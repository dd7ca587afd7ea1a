"""WER and PER known answers."""

from __future__ import annotations

import pytest

from refrain.eval.text_metrics import normalise_words, phoneme_error_rate, token_error_rate, word_error_rate
from refrain.text.g2p import G2P


def test_identical_text_is_zero_and_a_known_edit_is_counted() -> None:
    assert word_error_rate("[Verse]\nHello, world!", "hello world") == 0.0
    # one substitution and one deletion over four reference words
    assert word_error_rate("the cat sat down", "the dog sat") == pytest.approx(2 / 4)
    assert normalise_words("[Chorus] Oh-oh, YEAH!") == "oh oh yeah"


def test_token_error_rate_by_hand() -> None:
    assert token_error_rate(["a", "b", "c", "d"], ["a", "x", "c", "d", "e"]) == pytest.approx(2 / 4)
    assert token_error_rate([], []) == 0.0
    assert token_error_rate(["a"], []) == 1.0


def test_phoneme_error_rate_zero_for_same_lyrics_and_positive_for_others() -> None:
    g2p = G2P()
    assert phoneme_error_rate("sing me a song", "Sing me a song!", g2p, "en") == 0.0
    assert 0.0 < phoneme_error_rate("sing me a song", "bring me a gong", g2p, "en") < 1.0
