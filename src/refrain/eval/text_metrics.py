"""Lyric intelligibility: word error rate (``jiwer``) and phoneme error rate over refrain's own G2P.

PER compares phoneme sequences, so an ASR transcript in another spelling of the same sounds is not
punished, and it works for languages without spaces (zh, ja) where WER is meaningless.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import jiwer

from refrain.text.g2p import G2P

_WORDS = re.compile(r"[^\w\s']+", re.UNICODE)
_SECTION = re.compile(r"^\s*\[[^\]]*\]\s*", re.MULTILINE)


def normalise_words(text: str) -> str:
    """Lower case, structure tags (``[Verse]``) and punctuation removed, whitespace collapsed."""
    text = _SECTION.sub(" ", text)
    return " ".join(_WORDS.sub(" ", text.lower()).split())


def word_error_rate(reference: str, hypothesis: str) -> float:
    """WER of ``hypothesis`` against ``reference`` after normalisation (1.0 for an empty hypothesis)."""
    ref, hyp = normalise_words(reference), normalise_words(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    return float(jiwer.wer(ref, hyp))


def token_error_rate(reference: Sequence[str], hypothesis: Sequence[str]) -> float:
    """Edit distance / len(reference) over token sequences (the PER when tokens are phonemes)."""
    if not reference:
        return 0.0 if not hypothesis else 1.0
    if not hypothesis:
        return 1.0
    return float(jiwer.wer(" ".join(reference), " ".join(hypothesis)))


def phoneme_error_rate(reference: str, hypothesis: str, g2p: G2P, language: str | None = None) -> float:
    """PER of the phonemes of ``hypothesis`` against those of ``reference`` (both through ``g2p``)."""
    ref_text, hyp_text = normalise_words(reference), normalise_words(hypothesis)
    ref = g2p.phonemize(ref_text, language) if ref_text else []
    hyp = g2p.phonemize(hyp_text, language) if hyp_text else []
    return token_error_rate([p for p in ref if p.strip()], [p for p in hyp if p.strip()])
