"""refrain.text: lyrics in, frame-aligned phoneme ids out.

- `lrc`: LRC files (`parse_lrc`, `load_lrc`, `format_lrc`), and the one malformed-line policy;
- `encoding`: lyric/tag files that are not UTF-8 (`decode_text`: a validated fallback chain);
- `lyrics`: ACE-Step structured lyrics (`parse_structured_lyrics`, `normalize_lyrics`) and rough
  line times for untimed lyrics (`estimate_line_times`);
- `g2p`: grapheme-to-phoneme for en zh ja ko es fr de pt it ru with code-switching, each line read in
  its song's context (`G2P`, `scripts.song_context`); helpers in `scripts`, `espeak`, `chinese`,
  `japanese`, `korean`;
- `vocab`: the append-only `PhonemeVocab`;
- `alignment`: DiffRhythm's sentence-level placement on the latent grid (`align_sentences`).

Nothing is imported here, so `import refrain.text.lrc` stays cheap (no torch, no espeak).
"""
