"""Korean Hangul -> IPA-style phones through jamo decomposition and the core sound rules.

espeak-ng's 'ko' voice was tested and found poor for lyrics: it writes ㄱ as a uvular `q` in most
positions (고기 -> ɡ o q i) and applies no nasalisation (국물 -> q m, 합니다 -> p n). So syllables are
decomposed arithmetically (Unicode's Hangul algorithm) and these rules applied within a word:
liaison (a coda moves onto a following silent ㅇ), ㄷ/ㅌ + 이 palatalisation, ㅎ deletion and
aspiration, coda neutralisation to the seven final sounds, nasalisation, ㄹ assimilation
(ㄴㄹ/ㄹㄴ -> ll, ㅁ/ㅇ + ㄹ -> n), tensing after obstruents, and voicing of lenis stops between
voiced sounds. Phones use the IPA symbols espeak uses for other languages (shared inventory);
glides are separate phones (ㅑ -> j a). Digits are read digit by digit in Sino-Korean.
"""

from __future__ import annotations

import re
from itertools import pairwise

_LEADS = "ㄱㄲㄴㄷㄸㄹㅁㅂㅃㅅㅆㅇㅈㅉㅊㅋㅌㅍㅎ"
_VOWELS = "ㅏㅐㅑㅒㅓㅔㅕㅖㅗㅘㅙㅚㅛㅜㅝㅞㅟㅠㅡㅢㅣ"
_TAILS = ["", "ㄱ", "ㄲ", "ㄳ", "ㄴ", "ㄵ", "ㄶ", "ㄷ", "ㄹ", "ㄺ", "ㄻ", "ㄼ", "ㄽ", "ㄾ", "ㄿ", "ㅀ"]
_TAILS += ["ㅁ", "ㅂ", "ㅄ", "ㅅ", "ㅆ", "ㅇ", "ㅈ", "ㅊ", "ㅋ", "ㅌ", "ㅍ", "ㅎ"]
_CLUSTERS = {
    "ㄳ": "ㄱㅅ",
    "ㄵ": "ㄴㅈ",
    "ㄶ": "ㄴㅎ",
    "ㄺ": "ㄹㄱ",
    "ㄻ": "ㄹㅁ",
    "ㄼ": "ㄹㅂ",
    "ㄽ": "ㄹㅅ",
    "ㄾ": "ㄹㅌ",
    "ㄿ": "ㄹㅍ",
    "ㅀ": "ㄹㅎ",
    "ㅄ": "ㅂㅅ",
}
# Which consonant of a cluster is pronounced when nothing follows to take the other one.
_CLUSTER_KEEP = {
    "ㄳ": "ㄱ",
    "ㄵ": "ㄴ",
    "ㄶ": "ㄴ",
    "ㄺ": "ㄱ",
    "ㄻ": "ㅁ",
    "ㄼ": "ㄹ",
    "ㄽ": "ㄹ",
    "ㄾ": "ㄹ",
    "ㄿ": "ㅂ",
    "ㅀ": "ㄹ",
    "ㅄ": "ㅂ",
}
# Seven final sounds after neutralisation.
_FINAL_CLASS = {
    "ㄱ": "k",
    "ㄲ": "k",
    "ㅋ": "k",
    "ㄴ": "n",
    "ㄷ": "t",
    "ㅅ": "t",
    "ㅆ": "t",
    "ㅈ": "t",
    "ㅊ": "t",
    "ㅌ": "t",
    "ㅎ": "t",
    "ㄹ": "l",
    "ㅁ": "m",
    "ㅂ": "p",
    "ㅍ": "p",
    "ㅇ": "ŋ",
}
_NASAL = {"k": "ŋ", "t": "n", "p": "m"}
_ASPIRATED = {"ㄱ": "ㅋ", "ㄷ": "ㅌ", "ㅈ": "ㅊ", "ㅂ": "ㅍ", "ㅅ": "ㅌ"}
_TENSE = {"ㄱ": "ㄲ", "ㄷ": "ㄸ", "ㅂ": "ㅃ", "ㅅ": "ㅆ", "ㅈ": "ㅉ"}
_ONSET_IPA = {
    "ㄱ": "k",
    "ㄲ": "k͈",
    "ㄴ": "n",
    "ㄷ": "t",
    "ㄸ": "t͈",
    "ㄹ": "ɾ",
    "ㅁ": "m",
    "ㅂ": "p",
    "ㅃ": "p͈",
    "ㅅ": "s",
    "ㅆ": "s͈",
    "ㅇ": "",
    "ㅈ": "tɕ",
    "ㅉ": "t͈ɕ",
    "ㅊ": "tɕʰ",
    "ㅋ": "kʰ",
    "ㅌ": "tʰ",
    "ㅍ": "pʰ",
    "ㅎ": "h",
    "L": "l",
}
_VOICED = {"ㄱ": "ɡ", "ㄷ": "d", "ㅂ": "b", "ㅈ": "dʑ"}
_VOWEL_IPA = [
    ("a",),
    ("ɛ",),
    ("j", "a"),
    ("j", "ɛ"),
    ("ʌ",),
    ("e",),
    ("j", "ʌ"),
    ("j", "e"),
    ("o",),
    ("w", "a"),
    ("w", "ɛ"),
    ("w", "e"),
    ("j", "o"),
    ("u",),
    ("w", "ʌ"),
    ("w", "e"),
    ("w", "i"),
    ("j", "u"),
    ("ɯ",),
    ("ɰ", "i"),
    ("i",),
]
_SINO_DIGITS = {
    "0": "영",
    "1": "일",
    "2": "이",
    "3": "삼",
    "4": "사",
    "5": "오",
    "6": "육",
    "7": "칠",
    "8": "팔",
    "9": "구",
}
_WORD = re.compile(r"[\uac00-\ud7a3]+|[\u3131-\u318e]+|\d")


class _Syllable:
    __slots__ = ("onset", "vowel", "coda")

    def __init__(self, onset: str, vowel: int, coda: str) -> None:
        self.onset = onset  # a lead jamo letter, or "L" for a lateral [l] onset
        self.vowel = vowel  # index into _VOWELS
        self.coda = coda  # 0-2 jamo letters, clusters split


def _decompose(word: str) -> list[_Syllable]:
    syllables = []
    for ch in word:
        index = ord(ch) - 0xAC00
        lead, rest = divmod(index, 588)
        vowel, tail = divmod(rest, 28)
        coda = _TAILS[tail]
        syllables.append(_Syllable(_LEADS[lead], vowel, _CLUSTERS.get(coda, coda)))
    return syllables


def _resolve_boundary(cur: _Syllable, nxt: _Syllable) -> None:
    """Apply the rules across one syllable boundary, updating cur.coda and nxt.onset."""
    if nxt.onset == "ㅇ" and cur.coda:
        if cur.coda[-1] == "ㅎ":
            cur.coda = cur.coda[:-1]
        if cur.coda and cur.coda[-1] != "ㅇ":
            moved = cur.coda[-1]
            if moved in "ㄷㅌ" and nxt.vowel == _VOWELS.index("ㅣ"):
                moved = "ㅈ" if moved == "ㄷ" else "ㅊ"
            cur.coda, nxt.onset = cur.coda[:-1], moved
    elif cur.coda.endswith("ㅎ") and nxt.onset in "ㄱㄷㅈㅅ":
        nxt.onset = "ㅆ" if nxt.onset == "ㅅ" else _ASPIRATED[nxt.onset]
        cur.coda = cur.coda[:-1]
    elif nxt.onset == "ㅎ" and cur.coda and cur.coda[-1] in "ㄱㄷㅂㅈㅅ":
        nxt.onset = _ASPIRATED[cur.coda[-1]]
        cur.coda = cur.coda[:-1]


def _final_sound(coda: str) -> str:
    """The coda's one pronounced sound after neutralisation ('' for none)."""
    if not coda:
        return ""
    if len(coda) == 2:
        joined = next(k for k, v in _CLUSTERS.items() if v == coda)
        coda = _CLUSTER_KEEP[joined]
    return _FINAL_CLASS[coda]


def _assimilate(final: str, nxt: _Syllable) -> str:
    """Nasalisation, ㄹ assimilation and tensing between a final sound and the next onset."""
    if nxt.onset == "ㄹ":
        if final in ("l", "n"):
            nxt.onset = "L"
            return "l"
        if final in ("m", "ŋ"):
            nxt.onset = "ㄴ"
        elif final in _NASAL:
            nxt.onset = "ㄴ"
            return _NASAL[final]
    if final == "l" and nxt.onset == "ㄴ":
        nxt.onset = "L"
    if final in _NASAL and nxt.onset in ("ㄴ", "ㅁ"):
        return _NASAL[final]
    if final in _NASAL and nxt.onset in _TENSE:
        nxt.onset = _TENSE[nxt.onset]
    return final


def _word_phones(word: str) -> list[str]:
    if word.isdigit():
        word = _SINO_DIGITS[word]
    if not ("\uac00" <= word[0] <= "\ud7a3"):
        return _jamo_phones(word)
    syllables = _decompose(word)
    for cur, nxt in pairwise(syllables):
        _resolve_boundary(cur, nxt)
    finals = [_final_sound(s.coda) for s in syllables]
    for i in range(len(syllables) - 1):
        finals[i] = _assimilate(finals[i], syllables[i + 1])
    phones: list[str] = []
    for i, syl in enumerate(syllables):
        voiced_before = i > 0 and finals[i - 1] in ("", "n", "m", "ŋ", "l")
        onset = _VOICED.get(syl.onset) if voiced_before and syl.onset in _VOICED else _ONSET_IPA[syl.onset]
        if onset:
            phones.append(onset)
        phones.extend(_VOWEL_IPA[syl.vowel])
        if finals[i]:
            phones.append(finals[i])
    return phones


def _jamo_phones(letters: str) -> list[str]:
    """Bare compatibility jamo (ㅋㅋ, ㅠㅠ): consonants read as onsets, vowels as vowels."""
    phones: list[str] = []
    for ch in letters:
        if ch in _VOWELS:
            phones.extend(_VOWEL_IPA[_VOWELS.index(ch)])
        elif _ONSET_IPA.get(ch):
            phones.append(_ONSET_IPA[ch])
    return phones


def korean_words(text: str) -> list[list[str]]:
    """Words of a Hangul run (split at spaces, punctuation, digits), each a list of phones."""
    words = [_word_phones(w) for w in _WORD.findall(text)]
    return [w for w in words if w]
