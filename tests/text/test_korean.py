"""Korean jamo G2P: the sound rules that made it preferable to espeak's 'ko' voice."""

from __future__ import annotations

import pytest

from refrain.text.korean import korean_words


@pytest.mark.parametrize(
    ("word", "phones"),
    [
        ("한국어", "h a n ɡ u ɡ ʌ"),  # liaison + voicing
        ("국물", "k u ŋ m u l"),  # nasalisation
        ("합니다", "h a m n i d a"),
        ("좋아요", "tɕ o a j o"),  # ㅎ deletion
        ("좋다", "tɕ o tʰ a"),  # ㅎ aspiration
        ("축하", "tɕʰ u kʰ a"),
        ("같이", "k a tɕʰ i"),  # palatalisation
        ("신라", "s i l l a"),  # ㄹ assimilation
        ("심리", "s i m n i"),
        ("학교", "h a k k͈ j o"),  # tensing
        ("값이", "k a p s͈ i"),  # cluster liaison
        ("닭", "t a k"),  # cluster simplification
    ],
)
def test_sound_rules(word: str, phones: str) -> None:
    assert korean_words(word) == [phones.split()]


def test_words_digits_and_bare_jamo() -> None:
    assert korean_words("사랑 해, 12") == [["s", "a", "ɾ", "a", "ŋ"], ["h", "ɛ"], ["i", "l"], ["i"]]
    assert korean_words("ㅋㅋ") == [["kʰ", "kʰ"]]
