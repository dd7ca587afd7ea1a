"""The corpus shipped inside the `immich-memories-music` package (no ``--input``), tagged from its licence."""

from __future__ import annotations

from refrain.data.audio_files import unique_keys
from refrain.data.embedded import embedded_tags, embedded_tracks_dir
from refrain.data.sources import SourceItem, SourceLayout, list_audio, register_source


def scan_embedded() -> list[SourceItem]:
    """The 29 tracks shipped by immich-memories-music, tagged from its licence table, no lyrics."""
    root = embedded_tracks_dir()
    table = embedded_tags()
    audio_files = list_audio(root)
    keys = unique_keys(audio_files, root)
    items = []
    for audio in audio_files:
        mood = audio.parent.name
        tags = table.get(f"{mood}/{audio.name}", (mood,))
        items.append(SourceItem(key=keys[audio], audio=audio.resolve(), inline_tags=tuple(tags)))
    return items


LAYOUT = register_source(
    SourceLayout("embedded", "the immich-memories-music corpus, no --input", scan=scan_embedded)
)
