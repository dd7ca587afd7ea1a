"""Mandarin phonemes as DiffRhythm uses them: pinyin initial + final carrying the tone digit.

`你好` -> `n i3 h ao3`. pypinyin picks readings of polyphones from its phrase dictionary (长大
zhang3 da4, 长度 chang2 du4). Finals are the strict (phonological) ones, so `yu` gives `v`, `wo`
gives `uo`; the neutral tone is 5. Syllabic nasals (`n2`, `m2`, `hm5`) stay one token.
Word boundaries are where the text has them (spaces, punctuation): Chinese lyrics in ACE-Step
style are already space-separated into words, and no segmenter is guessed at.
"""

from __future__ import annotations

import re
from functools import lru_cache

from pypinyin import Style, lazy_pinyin
from pypinyin.contrib.tone_convert import to_finals_tone3, to_initials

# Digits are read one by one (九九六 for 996, as years and numbers like 996/007 are sung).
_DIGITS = str.maketrans("0123456789", "零一二三四五六七八九")
_SYLLABLE = re.compile(r"^[a-zêü]+[1-5]$")


def _expand_iteration_marks(text: str) -> str:
    """々 repeats the previous character (人々 -> 人人); pypinyin does not read it."""
    out: list[str] = []
    for ch in text:
        out.append(out[-1] if ch == "々" and out else ch)
    return "".join(out)


@lru_cache(maxsize=8192)
def syllable_phones(syllable: str) -> tuple[str, ...]:
    """`hao3` -> (`h`, `ao3`); `ai4` -> (`ai4`,); `n2` -> (`n2`,). Cached: Mandarin has ~1,300 toned syllables."""
    initial = to_initials(syllable, strict=True)
    final = to_finals_tone3(syllable, strict=True, neutral_tone_with_five=True)
    if not final:
        return (syllable,)
    return (initial, final) if initial else (final,)


def chinese_words(text: str) -> list[list[str]]:
    """Words of a Han-script run, each a list of pinyin phones; non-Han characters split words."""
    text = _expand_iteration_marks(text.translate(_DIGITS))
    words: list[list[str]] = []
    current: list[str] = []
    for item in lazy_pinyin(text, style=Style.TONE3, neutral_tone_with_five=True):
        if _SYLLABLE.match(item):
            current.extend(syllable_phones(item))
        elif current:
            words.append(current)
            current = []
    if current:
        words.append(current)
    return words
