"""Which writing system each character belongs to, the language of a line, and code-switch runs.

Lyrics mix scripts ("硅谷 那个 coder 调试 neural network"), so G2P works on runs of one script,
each read in its own language. Script decides most languages outright (Han, kana, Hangul,
Cyrillic); Latin text needs a guess, made by `detect_latin_language` from diacritics and
distinct stop-words, falling back to the caller's default.

Lyrics are read in their song's context (`song_context`, `line_language`): the Latin language is
decided over the whole song, and one line leaves it only on clear evidence, so a refrain of vocables
("Abracadabra ama-ooh-na-na") is read like the English lines around it and the same word gets the
same phonemes everywhere in the song.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

from refrain.errors import RefrainInputError

LANGUAGES = ("en", "zh", "ja", "ko", "es", "fr", "de", "pt", "it", "ru")
LATIN_LANGUAGES = ("en", "es", "fr", "de", "pt", "it")

LATIN, HAN, KANA, HANGUL, CYRILLIC = "latin", "han", "kana", "hangul", "cyrillic"

_HAN_RANGES = ((0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0x20000, 0x3FFFF), (0x3005, 0x3007))
_KANA_RANGES = ((0x3040, 0x309F), (0x30A0, 0x30FA), (0x30FC, 0x30FF), (0x31F0, 0x31FF), (0xFF66, 0xFF9F))
_HANGUL_RANGES = ((0xAC00, 0xD7A3), (0x1100, 0x11FF), (0x3131, 0x318E), (0xA960, 0xA97F), (0xD7B0, 0xD7FF))


class UnsupportedScriptError(RefrainInputError):
    """Text in a script refrain's G2P cannot read (Thai, Arabic, ...); callers skip the line."""

    def __init__(self, snippet: str, script: str) -> None:
        self.script = script
        super().__init__(
            repr(snippet),
            f"text in the {script} script, which refrain's G2P cannot phonemize",
            "pass --language with the line's language or drop the line",
        )


def _in(cp: int, ranges: tuple[tuple[int, int], ...]) -> bool:
    return any(lo <= cp <= hi for lo, hi in ranges)


@lru_cache(maxsize=65536)
def char_script(ch: str) -> str | None:
    """LATIN/HAN/KANA/HANGUL/CYRILLIC, None for script-neutral characters (digits, punctuation,
    spaces, marks, symbols), else the Unicode name's first word of an unsupported script (e.g. 'THAI')."""
    cp = ord(ch)
    if cp < 128:
        return LATIN if ch.isalpha() else None
    if _in(cp, _HAN_RANGES):
        return HAN
    if _in(cp, _KANA_RANGES):
        return KANA
    if _in(cp, _HANGUL_RANGES):
        return HANGUL
    category = unicodedata.category(ch)
    if category[0] != "L" or category == "Lm":
        return None
    name = unicodedata.name(ch, "")
    if name.startswith("LATIN"):
        return LATIN
    if name.startswith("CYRILLIC"):
        return CYRILLIC
    return name.split(" ")[0] or f"U+{cp:04X}"


def check_language(language: str, what: str = "language") -> str:
    if language not in LANGUAGES:
        raise RefrainInputError(what, f"unknown language {language!r}", f"use one of {' '.join(LANGUAGES)}")
    return language


def _raise_unsupported(text: str, index: int, script: str) -> None:
    lo = max(0, index - 10)
    snippet = text[lo : index + 20].strip()
    raise UnsupportedScriptError(snippet, script)


SUPPORTED_SCRIPTS = (LATIN, HAN, KANA, HANGUL, CYRILLIC)


def script_counts(text: str, strict: bool = True) -> dict[str, int]:
    """Letters per script. `strict` raises UnsupportedScriptError on the first letter of an
    unsupported script; otherwise those are counted under their script name too."""
    counts: dict[str, int] = {}
    for index, ch in enumerate(text):
        script = char_script(ch)
        if script is None:
            continue
        if strict and script not in SUPPORTED_SCRIPTS:
            _raise_unsupported(text, index, script)
        counts[script] = counts.get(script, 0) + 1
    return counts


# Latin-script guess. Scores: a diacritic or stop-word typical of a language adds its weight; the
# best language wins only with a score >= 2 and a clear lead, otherwise the default stands. Short
# English words in a Chinese line ("no way") thus stay English.
_DIACRITICS: dict[str, dict[str, int]] = {
    "es": {"ñ": 3, "¿": 3, "¡": 3, "á": 1, "é": 1, "í": 1, "ó": 1, "ú": 1},
    "fr": {
        "œ": 3,
        "ë": 2,
        "ï": 2,
        "î": 2,
        "û": 2,
        "ÿ": 3,
        "ç": 1,
        "è": 1,
        "ê": 1,
        "â": 1,
        "ô": 1,
        "à": 1,
        "é": 1,
        "ù": 1,
    },
    "de": {"ß": 3, "ä": 3, "ö": 3, "ü": 2},
    "pt": {"ã": 3, "õ": 3, "ç": 1, "á": 1, "é": 1, "ê": 1, "â": 1, "ô": 1, "ó": 1, "à": 1, "í": 1, "ú": 1},
    "it": {"ì": 2, "ò": 2, "à": 1, "è": 1, "ù": 1, "é": 1},
}


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_STOP_WORDS: dict[str, frozenset[str]] = {
    "en": _words(
        "the and you your i i'm my me is are of to it in on with this that we love baby oh all be just "
        "don't can't what when know never like so for was will have"
    ),
    "es": _words(
        "el la los las y que de del en un una es por para con mi tu yo te se lo amor corazón quiero pero "
        "como más está soy eres noche vida"
    ),
    "fr": _words(
        "le la les et je tu il elle est une des du au aux mon ma mes pas qui dans pour avec moi toi nous "
        "vous sur ce c' j' l' d' qu' n' m' t' s' amour cœur suis tout"
    ),
    "de": _words(
        "der die das und ich du nicht ist ein eine mit auf dich mich mein meine wir sie es zu den dem "
        "von nur noch auch bin wie liebe herz nacht"
    ),
    "pt": _words(
        "o os as e um uma não você eu meu minha com em do da dos das no na que é por pra para ao seu "
        "sua coração amor sem mais"
    ),
    "it": _words(
        "il lo gli la le e di che non un una sono mi ti io tu per con del della è ma ci si mio mia "
        "amore cuore ancora sei come"
    ),
}
_WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]*)?")


def latin_scores(text: str) -> dict[str, int]:
    """Evidence per Latin-script language: diacritic weights plus one point per *distinct* stop-word, so a
    repeated vocable ("na na na", "la la la") counts once."""
    lowered = text.lower().replace("’", "'")
    scores = dict.fromkeys(LATIN_LANGUAGES, 0)
    for ch in lowered:
        for language, marks in _DIACRITICS.items():
            scores[language] += marks.get(ch, 0)
    for word in set(_WORD.findall(lowered)):
        elided = word[: word.index("'") + 1] if "'" in word else None
        for language, words in _STOP_WORDS.items():
            if word in words or (elided and elided in words):
                scores[language] += 1
    return scores


def detect_latin_language(text: str, default: str = "en") -> str:
    """Guess en/es/fr/de/pt/it for Latin-script text (see the scoring note above)."""
    scores = latin_scores(text)
    ranked = sorted(scores.items(), key=lambda item: -item[1])
    (best, top), (_, second) = ranked[0], ranked[1]
    if top >= 2 and top > second and top > scores.get(default, 0):
        return best
    return default if default in LATIN_LANGUAGES else "en"


# A Latin line leaves its song's Latin language only on this much evidence, and this far ahead of it.
SWITCH_EVIDENCE = 2
SWITCH_LEAD = 2


def switch_latin_language(text: str, song_latin: str) -> str:
    """The language of a Latin-script line inside a song whose Latin lines are `song_latin`: that language,
    unless another one has at least SWITCH_EVIDENCE points and leads it by SWITCH_LEAD (a Spanish line
    "Te quiero, mi amor" in an English song switches; "Abracadabra ama-ooh-na-na" does not)."""
    scores = latin_scores(text)
    best = max(scores, key=lambda language: (scores[language], language == song_latin))
    own = scores.get(song_latin, 0)
    if best != song_latin and scores[best] >= SWITCH_EVIDENCE and scores[best] >= own + SWITCH_LEAD:
        return best
    return song_latin if song_latin in LATIN_LANGUAGES else "en"


@dataclass(frozen=True)
class SongContext:
    """A song's language (majority of its lines) and the language its Latin-script text is read in."""

    language: str
    latin: str


def _script_language(counts: dict[str, int]) -> str | None:
    """ja/ko/zh/ru from the script alone; LATIN for Latin-only text; None for no supported letter."""
    for script, language in ((KANA, "ja"), (HANGUL, "ko"), (HAN, "zh"), (CYRILLIC, "ru")):
        if counts.get(script):
            return language
    return LATIN if counts.get(LATIN) else None


def song_context(lines: list[str] | tuple[str, ...], default: str = "en") -> SongContext:
    """The context each line is read in. Its Latin language is the majority of the lines that hold
    evidence for one (a line of vocables votes for nothing; ties go to the pooled evidence of the whole
    song, then to `default`); the song's language is the majority of all its lines by script (ties:
    the first to appear; no letters at all: `default`)."""
    check_language(default, "default language")
    normalised = [unicodedata.normalize("NFKC", line) for line in lines]
    latin_votes: dict[str, int] = {}
    for line in normalised:
        scores = latin_scores(line)
        ranked = sorted(scores.values(), reverse=True)
        if ranked[0] >= SWITCH_EVIDENCE and ranked[0] > ranked[1]:
            best = max(scores, key=scores.__getitem__)
            latin_votes[best] = latin_votes.get(best, 0) + 1
    pooled = latin_scores("\n".join(normalised))
    latin = max(
        LATIN_LANGUAGES,
        key=lambda lang: (latin_votes.get(lang, 0), pooled[lang] if latin_votes else 0, lang == default),
    )
    votes: dict[str, int] = {}
    for line in normalised:
        language = _script_language(script_counts(line, strict=False))
        if language is not None:
            language = latin if language == LATIN else language
            votes[language] = votes.get(language, 0) + 1
    if not votes:
        return SongContext(default, latin)
    top = max(votes.values())
    return SongContext(next(lang for lang, n in votes.items() if n == top), latin)


def line_language(text: str, context: SongContext) -> str:
    """A line's language in its song: the script decides kana/Hangul/Cyrillic lines, a Han-only line is ja
    in a Japanese song and zh otherwise, a Latin-only line keeps the song's Latin language unless it
    holds evidence for another (`switch_latin_language`), a line with no letters takes the song's."""
    text = unicodedata.normalize("NFKC", text)
    language = _script_language(script_counts(text, strict=False))
    if language is None:
        return context.language
    if language == "zh" and context.language == "ja":
        return "ja"
    if language == LATIN:
        return switch_latin_language(text, context.latin)
    return language


def detect_language(text: str, default: str = "en") -> str:
    """The language of a line (or whole lyrics) by script: kana -> ja, else Hangul -> ko, else Han ->
    zh (ja when `default` is ja), else Cyrillic -> ru, else Latin -> `detect_latin_language`; text
    with no letters -> `default`. Letters of other scripts are ignored when supported ones are
    present (a whole song with one Thai line is still, say, English); text with only unsupported
    letters raises UnsupportedScriptError. `G2P.phonemize` is strict per line."""
    check_language(default, "default language")
    text = unicodedata.normalize("NFKC", text)
    counts = script_counts(text, strict=False)
    if counts and not any(counts.get(script) for script in SUPPORTED_SCRIPTS):
        script_counts(text)  # raises, naming the first unsupported letter
    return _language_from_counts(counts, text, default)


def _language_from_counts(counts: dict[str, int], text: str, default: str) -> str:
    if counts.get(KANA):
        return "ja"
    if counts.get(HANGUL):
        return "ko"
    if counts.get(HAN):
        return "ja" if default == "ja" else "zh"
    if counts.get(CYRILLIC):
        return "ru"
    if counts.get(LATIN):
        return detect_latin_language(text, default)
    return default


@dataclass(frozen=True)
class Run:
    """A stretch of one line read in one language; neutral characters ride along with a run."""

    language: str
    text: str


def split_runs(
    line: str, language: str | None = None, default: str = "en", latin_default: str = "en"
) -> list[Run]:
    """Split a line into language runs. The line's language is `language` or the detected one;
    Han reads as ja in a Japanese line (kanji) and zh otherwise; Latin runs take the line's language
    when it is a Latin-script one, else a guess with `latin_default` as default (code-switched English
    in CJK/Russian lyrics; the song's Latin language). Digits and punctuation join the run they follow
    (or the first run)."""
    text = unicodedata.normalize("NFKC", line)
    counts = script_counts(text)
    if language is not None:
        check_language(language)
    line_language = language or _language_from_counts(
        counts, text, check_language(default, "default language")
    )
    han_language = "ja" if line_language == "ja" or counts.get(KANA) else "zh"
    slots = {KANA: "ja", HANGUL: "ko", CYRILLIC: "ru", HAN: han_language, LATIN: LATIN}
    pieces: list[list[str]] = []  # [slot, text]
    prefix = ""
    for ch in text:
        script = char_script(ch)
        if script is None:
            if pieces:
                pieces[-1][1] += ch
            else:
                prefix += ch
            continue
        slot = slots[script]
        if pieces and pieces[-1][0] == slot:
            pieces[-1][1] += ch
        else:
            pieces.append([slot, ch])
    if not pieces:
        return [Run(line_language, text.strip())] if any(ch.isalnum() for ch in text) else []
    pieces[0][1] = prefix + pieces[0][1]
    if LATIN in (slot for slot, _ in pieces):
        if line_language in LATIN_LANGUAGES:
            latin = line_language
        else:
            latin = detect_latin_language(" ".join(t for s, t in pieces if s == LATIN), latin_default)
        pieces = [[latin if slot == LATIN else slot, piece] for slot, piece in pieces]
    runs: list[Run] = []
    for slot, piece in pieces:
        if runs and runs[-1].language == slot:
            runs[-1] = Run(slot, runs[-1].text + piece)
        elif piece.strip():
            runs.append(Run(slot, piece))
    return [Run(run.language, run.text.strip()) for run in runs]
