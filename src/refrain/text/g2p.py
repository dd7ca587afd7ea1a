"""Grapheme-to-phoneme for lyrics in en zh ja ko es fr de pt it ru, code-switching included.

Per line: the language is the one given, else the line's language in its song's context
(`scripts.song_context` over all lines passed together, then `scripts.line_language`: the song's
Latin language unless the line clearly holds another); the line is split into script runs, each
read in its own language:
- en es fr de pt it ru: espeak-ng IPA through phonemizer (no stress marks; voices in
  `ESPEAK_VOICES`: American English, Latin-American Spanish, Brazilian Portuguese);
- zh: pypinyin initials + finals with tone digits (`chinese.py`, DiffRhythm's scheme);
- ja: pykakasi kanji -> hiragana, then espeak-ng 'ja' (`japanese.py`);
- ko: jamo decomposition with Korean sound rules (`korean.py`; espeak 'ko' tested poor).
Words are separated by `WORD_BOUNDARY`; punctuation is dropped. All runs of one espeak voice in
a batch of lines go through a single phonemizer call.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from refrain.text.chinese import chinese_words
from refrain.text.espeak import espeak_words
from refrain.text.japanese import kana_words
from refrain.text.korean import korean_words
from refrain.text.scripts import (
    LANGUAGES,
    SongContext,
    UnsupportedScriptError,
    check_language,
    detect_language,
    line_language,
    song_context,
    split_runs,
)
from refrain.text.vocab import WORD_BOUNDARY

__all__ = [
    "ESPEAK_VOICES",
    "G2P",
    "LANGUAGES",
    "SongContext",
    "UnsupportedScriptError",
    "WORD_BOUNDARY",
    "detect_language",
    "pronounceable",
    "song_context",
]

ESPEAK_VOICES: dict[str, str] = {
    "en": "en-us",
    "es": "es-419",
    "fr": "fr-fr",
    "de": "de",
    "pt": "pt-br",
    "it": "it",
    "ru": "ru",
    "ja": "ja",
}

# Leading bracket groups (a structure tag "[Chorus]", a stray LRC timestamp) are not sung.
_LEADING_TAGS = re.compile(r"^\s*(?:\[[^\[\]]*\]\s*)+")
# What espeak gets: letters, digits, marks, in-word apostrophes/hyphens, and symbols it verbalises.
_NOT_SPOKEN = re.compile(r"[^\w\s'+&%@$-]|_")
# Spelled-out capitals ("A I", "G.P.U.") are joined so espeak spells them ("A" alone reads as "a").
_SPACED_CAPITALS = re.compile(r"\b[A-Z]\b(?:(?:\.\s*|\s+)[A-Z]\b)+\.?")


def pronounceable(phones: Sequence[Sequence[str]]) -> bool:
    """Whether any line gave a phoneme. Lyrics that give none (only emoji, symbols, punctuation) are
    treated as no lyrics, an instrumental, in dataset preparation and in sampling alike."""
    return any(phones)


def _join_capitals(match: re.Match[str]) -> str:
    return "".join(ch for ch in match[0] if ch.isalpha())


def _espeak_text(text: str) -> str:
    text = _SPACED_CAPITALS.sub(_join_capitals, text)
    text = _NOT_SPOKEN.sub(" ", text.replace("’", "'"))
    text = re.sub(r"(?<!\w)['-]+|['-]+(?!\w)", " ", text)  # quotes and dashes not inside a word
    return " ".join(text.split())


class G2P:
    """Phonemizer for lyric lines. Build once and reuse: espeak voices are cached per language."""

    def __init__(self, default_language: str = "en", espeak_voices: Mapping[str, str] | None = None) -> None:
        self.default_language = check_language(default_language, "default language")
        self.espeak_voices = {**ESPEAK_VOICES, **(espeak_voices or {})}

    def phonemize(self, text: str, language: str | None = None) -> list[str]:
        """Phones of `text` (several lines allowed, joined by a word boundary); `language` None detects
        per line. Raises UnsupportedScriptError for a script no language here covers."""
        lines = [line for line in text.splitlines() if line.strip()]
        out: list[str] = []
        for phones in self.phonemize_lines(lines, language=language):
            if phones and out:
                out.append(WORD_BOUNDARY)
            out.extend(phones)
        return out

    def context(self, lines: Sequence[str]) -> SongContext:
        """The song context `lines` are read in (leading tags skipped, as `phonemize_lines` does)."""
        return song_context([_LEADING_TAGS.sub("", line) for line in lines], self.default_language)

    def phonemize_lines(
        self, lines: Sequence[str], language: str | None = None, context: SongContext | None = None
    ) -> list[list[str]]:
        """Phones per line, batching every espeak voice into one call. Leading `[...]` groups (section
        tags, timestamps) are skipped, so tag-only lines give []. `language` None reads each line in the
        song's context: `context` when given (a caller phonemizing a song line by line), else the
        context of `lines` themselves."""
        texts = [_LEADING_TAGS.sub("", line) for line in lines]
        if language is not None:
            check_language(language)
        elif context is None:
            context = self.context(lines)
        # (line index, run order) -> words; espeak jobs are filled in after their batched calls.
        words_of: dict[tuple[int, int], list[list[str]]] = {}
        jobs: dict[str, list[tuple[tuple[int, int], str]]] = {}
        run_keys: list[list[tuple[int, int]]] = []
        for index, text in enumerate(texts):
            keys: list[tuple[int, int]] = []
            if context is None:
                runs = split_runs(text, language, self.default_language)
            else:
                runs = split_runs(text, line_language(text, context), latin_default=context.latin)
            for order, run in enumerate(runs):
                key = (index, order)
                keys.append(key)
                if run.language == "zh":
                    words_of[key] = chinese_words(run.text)
                elif run.language == "ko":
                    words_of[key] = korean_words(run.text)
                else:
                    spoken = (
                        " ".join(kana_words(run.text)) if run.language == "ja" else _espeak_text(run.text)
                    )
                    if spoken:
                        jobs.setdefault(self.espeak_voices[run.language], []).append((key, spoken))
            run_keys.append(keys)
        for voice, items in jobs.items():
            results = espeak_words(voice, [spoken for _, spoken in items])
            for (key, _), words in zip(items, results, strict=True):
                words_of[key] = words
        return [self._join([w for key in keys for w in words_of.get(key, [])]) for keys in run_keys]

    @staticmethod
    def _join(words: list[list[str]]) -> list[str]:
        out: list[str] = []
        for word in words:
            if out:
                out.append(WORD_BOUNDARY)
            out.extend(word)
        return out
