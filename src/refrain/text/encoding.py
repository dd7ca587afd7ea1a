"""Decoding lyric and tag files that are not UTF-8 (GBK lyrics from a Chinese Windows editor, ...).

Byte order marks decide first (UTF-8, UTF-16); then strict UTF-8; then legacy encodings, each
accepted only when the decoded text looks like that encoding's language, because most legacy
decoders accept almost any byte string:

- ``euc_kr``: nearly every non-ASCII letter is Hangul (Chinese GBK text read as EUC-KR gives Hanja);
- ``gb18030`` (GBK, GB2312): most Han characters lie in GB2312's common set (Big5 or Latin-1 bytes
  read as GBK land in the extension area instead);
- ``big5`` (Traditional Chinese) and ``shift_jis`` (Japanese): only CJK characters, kana and
  full-width forms, and for ``shift_jis`` at least one kana and no half-width katakana runs;
- ``cp1252`` (Western European): only letters, common punctuation and symbols.

Nothing guessed is silent: callers record the encoding that was used (the dataset report, the error
at inference names the file).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from pathlib import Path

from refrain.text.scripts import HAN, HANGUL, KANA, char_script

UTF8 = "utf-8"
_BOMS = ((b"\xef\xbb\xbf", "utf-8-sig"), (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16"))
_CONTROL_OK = frozenset("\t\n\r\f")
_GB2312_SHARE = 0.9  # real Simplified Chinese lyrics: > 99 % of Han characters are in GB2312
_HANGUL_SHARE = 0.95


def _non_ascii(text: str) -> list[str]:
    return [ch for ch in text if ord(ch) >= 128 and not ch.isspace()]


def _has_bad_controls(text: str) -> bool:
    return any(unicodedata.category(ch) in ("Cc", "Co", "Cn") and ch not in _CONTROL_OK for ch in text)


def _cjk_like(ch: str) -> bool:
    """Han, kana, Hangul, CJK punctuation or full-width forms (what a CJK legacy encoding mostly holds)."""
    cp = ord(ch)
    return (
        char_script(ch) in (HAN, KANA, HANGUL)
        or 0x3000 <= cp <= 0x303F
        or 0xFF00 <= cp <= 0xFFEF
        or (unicodedata.category(ch)[0] in "PS" and cp < 0x2700)
    )


def _euc_kr(text: str) -> bool:
    letters = [ch for ch in _non_ascii(text) if unicodedata.category(ch)[0] == "L"]
    hangul = sum(1 for ch in letters if char_script(ch) == HANGUL)
    return bool(letters) and hangul >= _HANGUL_SHARE * len(letters)


def _gb2312(ch: str) -> bool:
    try:
        ch.encode("gb2312")
    except UnicodeEncodeError:
        return False
    return True


def _gbk(text: str) -> bool:
    chars = _non_ascii(text)
    han = [ch for ch in chars if char_script(ch) == HAN]
    return (
        bool(han)
        and all(_cjk_like(ch) for ch in chars)
        and sum(1 for ch in han if _gb2312(ch)) >= _GB2312_SHARE * len(han)
    )


def _big5(text: str) -> bool:
    chars = _non_ascii(text)
    return bool(chars) and all(_cjk_like(ch) and char_script(ch) != HANGUL for ch in chars)


def _shift_jis(text: str) -> bool:
    chars = _non_ascii(text)
    return (
        any(char_script(ch) == KANA for ch in chars)
        and all(_cjk_like(ch) and char_script(ch) != HANGUL for ch in chars)
        and not any(0xFF61 <= ord(ch) <= 0xFF9F for ch in chars)  # half-width katakana: misread bytes
    )


def _cp1252(text: str) -> bool:
    return all(
        unicodedata.category(ch)[0] in "LPSZN" and (char_script(ch) in (None, "latin") or not ch.isalpha())
        for ch in _non_ascii(text)
    )


# (codec, validator) tried in this order after the BOMs and strict UTF-8.
LEGACY_ENCODINGS: tuple[tuple[str, Callable[[str], bool]], ...] = (
    ("euc_kr", _euc_kr),
    ("gb18030", _gbk),
    ("big5", _big5),
    ("shift_jis", _shift_jis),
    ("cp1252", _cp1252),
)


def decode_text(data: bytes) -> tuple[str, str | None]:
    """(text, encoding) for the bytes of a text file; encoding None when nothing fit, in which case the
    text is UTF-8 with U+FFFD for the bytes that could not be read. A leading BOM is dropped."""
    for bom, codec in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(codec).lstrip("\ufeff"), codec
            except UnicodeDecodeError:
                break
    try:
        return data.decode(UTF8), UTF8
    except UnicodeDecodeError:
        pass
    for codec, plausible in LEGACY_ENCODINGS:
        try:
            text = data.decode(codec)
        except UnicodeDecodeError:
            continue
        if not _has_bad_controls(text) and plausible(text):
            return text, codec
    return data.decode(UTF8, errors="replace"), None


def read_text_with_encoding(path: str | Path) -> tuple[str, str | None]:
    """A text file's content and the encoding it was read with (see `decode_text`)."""
    return decode_text(Path(path).read_bytes())


def describe_encoding(encoding: str | None) -> str | None:
    """A note for the report when a file was not plain UTF-8; None when there is nothing to say."""
    if encoding in (UTF8, "utf-8-sig"):
        return None
    if encoding is None:
        return (
            "no encoding fits (tried UTF-8, UTF-16 with BOM, "
            + ", ".join(codec for codec, _ in LEGACY_ENCODINGS)
            + "); unreadable bytes were replaced"
        )
    return f"decoded as {encoding}"


__all__ = ["LEGACY_ENCODINGS", "decode_text", "describe_encoding", "read_text_with_encoding"]
