"""espeak-ng through `phonemizer`, using the library and voice data shipped in `espeakng_loader`.

No system espeak is needed. Backends are cached per voice because creating one is slow (it loads
the voice and copies the shared library), and one call phonemizes a whole batch of texts.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence

import espeakng_loader
from phonemizer.backend import EspeakBackend
from phonemizer.backend.espeak.wrapper import EspeakWrapper
from phonemizer.separator import Separator

# phonemizer logs a warning for every batch with a language switch; refrain keeps the phonemes
# ("remove-flags") and does not want the noise.
_LOG = logging.getLogger("refrain.text.espeak")
_LOG.setLevel(logging.ERROR)

_WORD_SEP = "|"
_SEPARATOR = Separator(phone=" ", word=_WORD_SEP, syllable="")
# Stress marks and separator characters that espeak or phonemizer can leave inside a phone.
_JUNK = str.maketrans("", "", "ˈˌ'\"-%=_|()[]")

_LOCK = threading.Lock()
_BACKENDS: dict[str, EspeakBackend] = {}
_configured = False


def configure_espeak() -> None:
    """Point phonemizer (and libespeak-ng itself) at espeakng_loader's library and data; idempotent."""
    global _configured
    if _configured:
        return
    library, data = espeakng_loader.get_library_path(), espeakng_loader.get_data_path()
    EspeakWrapper.set_library(library)
    EspeakWrapper.set_data_path(data)
    os.environ["PHONEMIZER_ESPEAK_LIBRARY"] = library
    os.environ["PHONEMIZER_ESPEAK_DATA_PATH"] = data
    os.environ["ESPEAK_DATA_PATH"] = data
    _configured = True


def espeak_backend(voice: str) -> EspeakBackend:
    """The cached backend for an espeak voice ('en-us', 'fr-fr', 'ja', ...), without stress marks."""
    with _LOCK:
        backend = _BACKENDS.get(voice)
        if backend is None:
            configure_espeak()
            backend = EspeakBackend(
                voice,
                preserve_punctuation=False,
                with_stress=False,
                language_switch="remove-flags",
                logger=_LOG,
            )
            _BACKENDS[voice] = backend
        return backend


def clean_phone(phone: str) -> str:
    """A phone without stress or separator characters ('' when nothing phonetic is left)."""
    return phone.translate(_JUNK).strip()


def espeak_words(voice: str, texts: Sequence[str]) -> list[list[list[str]]]:
    """Per text, its words, each a list of IPA phones; one espeak call for the whole batch.

    Texts must be single lines (a newline would split a text in two and shift the results).
    """
    if not texts:
        return []
    if any("\n" in text or "\r" in text for text in texts):
        raise ValueError("espeak_words takes single-line texts")
    backend = espeak_backend(voice)
    with _LOCK:  # one espeak instance is not safe to drive from two threads at once
        outputs = backend.phonemize(list(texts), separator=_SEPARATOR, strip=True, njobs=1)
    result: list[list[list[str]]] = []
    for output in outputs:
        words = []
        for word in output.split(_WORD_SEP):
            phones = [p for p in (clean_phone(p) for p in word.split()) if p]
            if phones:
                words.append(phones)
        result.append(words)
    return result
