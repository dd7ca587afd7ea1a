"""Japanese text -> space-separated hiragana words, ready for espeak-ng's 'ja' voice.

espeak-ng reads kana well (さくら -> s ä k ɯᵝ ɽ ä) but reads kanji as "Chinese letter", so kanji
are first given readings by pykakasi (its dictionary picks one reading per word: 東京 -> とうきょう).
pykakasi's segments become the word boundaries. The topic/direction particles は and へ, when
pykakasi splits them off as their own segment, are read わ and え as they are pronounced.
"""

from __future__ import annotations

import threading

import pykakasi

_PARTICLES = {"は": "わ", "へ": "え"}
_LOCK = threading.Lock()
_KAKASI: pykakasi.kakasi | None = None


def _kakasi() -> pykakasi.kakasi:
    """One shared converter: building it loads pykakasi's dictionaries (about 0.3 s)."""
    global _KAKASI
    with _LOCK:
        if _KAKASI is None:
            _KAKASI = pykakasi.kakasi()
        return _KAKASI


def _is_readable(ch: str) -> bool:
    return "\u3041" <= ch <= "\u309f" or ch == "ー" or ch.isdigit()


def kana_words(text: str) -> list[str]:
    """Hiragana words of a Japanese run (kanji read, katakana folded to hiragana, digits kept for
    espeak to read; punctuation dropped)."""
    words: list[str] = []
    for segment in _kakasi().convert(text):
        for part in segment["hira"].split():
            reading = _PARTICLES.get(part, part)
            kept = "".join(ch for ch in reading if _is_readable(ch))
            if kept:
                words.append(kept)
    return words
