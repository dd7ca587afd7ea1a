"""DiffRhythm's inputs for refrain's sampler: a style vector file as the prompt, token-id LRC as the lyrics.

refrain-infer and ``Pipeline`` hand every backbone a text prompt and lyrics text. DiffRhythm reads neither
as text: its style is a 512-d MuQ-MuLan vector and its lyrics are ids of its own G2P (neither model ships
with refrain), so the two strings name them instead, and a sidecar that records them regenerates the song:

- prompt ``STYLE`` or ``STYLE|NEGATIVE``: ``.pt`` (read with ``weights_only``) or ``.npy`` (no pickles) files
  of 512 values; the negative style replaces the style in the CFG branch (the release's
  ``v_c + cfg (v_c - v_neg)``), the zero vector when none is given;
- lyrics: LRC lines whose text is DiffRhythm token ids, ``[00:12.30] 45 17 2``, as its ``lrc.pt`` holds
  them (``lrc_text`` writes one from such a file); empty = instrumental.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from refrain.errors import RefrainInputError
from refrain.models.backbones.diffrhythm_lyrics import lines_in_window, place_lyrics

STYLE_DIM = 512
_LINE = re.compile(r"^\[(\d+):(\d+(?:\.\d+)?)\]\s*(.*)$")
_PROMPT_FIX = "pass --prompt STYLE.pt (or 'STYLE.pt|NEGATIVE.pt'): a 512-d MuQ-MuLan style vector file"


def read_style_vector(path: str | Path, what: str = "style", dim: int = STYLE_DIM) -> Tensor:
    """A ``dim``-d float vector from ``.npy`` (no pickles) or ``.pt`` (weights_only)."""
    path = Path(path)
    if not path.is_file():
        raise RefrainInputError(path, "not found", f"pass the {what} vector file (.pt or .npy, {dim} values)")
    try:
        raw = (
            np.load(path, allow_pickle=False)
            if path.suffix == ".npy"
            else torch.load(path, weights_only=True)
        )
    except Exception as error:
        first = str(error).strip().splitlines()[0][:120] if str(error).strip() else type(error).__name__
        raise RefrainInputError(
            path, f"cannot be read as plain numbers ({first})", "save it with torch.save or np.save"
        ) from None
    vector = torch.as_tensor(raw).float().reshape(-1) if isinstance(raw, Tensor | np.ndarray) else None
    if vector is None or vector.numel() != dim:
        raise RefrainInputError(
            path, f"is not a {dim}-d {what} vector", "pass MuQ-MuLan's (1, 512) embedding"
        )
    return vector


def styles_from_prompt(prompt: str, dim: int = STYLE_DIM) -> tuple[Tensor, Tensor | None]:
    """(style (1, D), negative style (1, D) or None) from ``STYLE`` or ``STYLE|NEGATIVE``."""
    parts = [part.strip() for part in prompt.split("|")]
    if not parts[0] or len(parts) > 2 or (len(parts) == 2 and not parts[1]):
        raise RefrainInputError(
            "prompt", f"{prompt!r} names no style vector file for DiffRhythm", _PROMPT_FIX
        )
    for part in parts:
        if not Path(part).is_file():
            raise RefrainInputError(
                "prompt", f"{part!r} is not a file (DiffRhythm's prompt is a style vector file)", _PROMPT_FIX
            )
    style = read_style_vector(parts[0], "style", dim)[None]
    negative = read_style_vector(parts[1], "negative style", dim)[None] if len(parts) == 2 else None
    return style, negative


def parse_token_lrc(text: str) -> tuple[list[float], list[list[int]]]:
    """(line start seconds, token ids per line) from LRC lines of DiffRhythm token ids."""
    times: list[float] = []
    lines: list[list[int]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        match = _LINE.match(line)
        tokens = match.group(3).split() if match else []
        if match is None or not all(token.isdigit() for token in tokens):
            raise RefrainInputError(
                f"lyrics line {number}",
                f"{line[:60]!r} is not '[mm:ss.xx] id id ...' (DiffRhythm token ids)",
                "DiffRhythm reads its own G2P ids, not words: write its lrc.pt as text with "
                "python -m refrain.cli.diffrhythm lrc lrc.pt, or sample without lyrics",
            )
        times.append(int(match.group(1)) * 60 + float(match.group(2)))
        lines.append([int(token) for token in tokens])
    return times, lines


def lrc_text(lyrics: Mapping[str, Sequence]) -> str:
    """DiffRhythm's ``{"time": [...], "lrc": [[ids], ...]}`` as the token-id LRC text ``parse_token_lrc`` reads."""
    rows = []
    for seconds, tokens in zip(lyrics["time"], lyrics["lrc"], strict=True):
        minutes, rest = divmod(float(seconds), 60.0)
        rows.append(f"[{int(minutes):02d}:{rest:05.2f}] " + " ".join(str(int(t)) for t in tokens))
    return "\n".join(rows)


def placed_ids(text: str, frames: int, total: int, window: int, vocab_size: int) -> Tensor:
    """(1, total) ids: the lyrics placed as the release places them from the song's start, zero on padding."""
    if frames > window:
        raise RefrainInputError(
            "duration",
            f"{frames} latent frames exceed DiffRhythm's window of {window}",
            "ask for a shorter song (or use diffrhythm_1b_full, 6144 frames)",
        )
    times, lines = parse_token_lrc(text)
    ids = place_lyrics(lines_in_window(times, lines, 0.0, window), window)[:frames]
    if ids.numel() and int(ids.max()) > vocab_size:
        raise RefrainInputError(
            "lyrics",
            f"token id {int(ids.max())} is outside this model's {vocab_size} ids",
            "use ids of DiffRhythm's G2P vocabulary",
        )
    return torch.nn.functional.pad(ids, (0, total - frames))[None]
