"""Prompts files: one JSON object per line, each a text2music song (``refrain-infer --prompts_file``).

Keys are ``SongRequest``'s (prompt, lyrics, duration, bpm, language, lyrics_format, lyrics_start, seed)
plus ``name`` (the output file's stem) and ``lyrics_file`` (read relative to the prompts file).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from refrain.errors import RefrainInputError
from refrain.text.lrc import read_text_file


def read_prompts(path: Path, options_seed: int) -> list[tuple[str, dict[str, Any]]]:
    """(name, request) per JSON line; ``lyrics_file`` is read relative to the prompts file; seeds default
    to the run's seed plus the line's index, so batching never changes which seed a song gets."""
    items: list[tuple[str, dict[str, Any]]] = []
    names: set[str] = set()
    for number, line in enumerate(read_text_file(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            request = json.loads(line)
        except json.JSONDecodeError as error:
            raise RefrainInputError(
                f"{path}:{number}", f"not JSON ({error.msg})", "write one JSON object per line"
            ) from None
        if not isinstance(request, dict):
            raise RefrainInputError(f"{path}:{number}", "not a JSON object", "write one JSON object per line")
        name = str(request.pop("name", f"{len(items):03d}"))
        if name in names:
            raise RefrainInputError(
                f"{path}:{number}", f"name {name!r} is used twice", "give every song its own name"
            )
        names.add(name)
        if "lyrics_file" in request:
            request["lyrics"] = read_text_file(path.parent / str(request.pop("lyrics_file")))
        request.setdefault("seed", options_seed + len(items))
        items.append((name, request))
    if not items:
        raise RefrainInputError(path, "holds no prompts", "write one JSON object per line")
    return items
