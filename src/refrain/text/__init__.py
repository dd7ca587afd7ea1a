"""refrain.text: lyrics in, frame-aligned phoneme ids out.

- `lrc`: LRC files (`parse_lrc`, `load_lrc`, `format_lrc`);
- `lyrics`: ACE-Step structured lyrics (`parse_structured_lyrics`, `normalize_lyrics`) and rough
  line times for untimed lyrics (`estimate_line_times`);
- `g2p`: grapheme-to-phoneme for en zh ja ko es fr de pt it ru with code-switching (`G2P`,
  `detect_language`); helpers in `scripts`, `espeak`, `chinese`, `japanese`, `korean`;
- `vocab`: the append-only `PhonemeVocab`;
- `alignment`: DiffRhythm's sentence-level placement on the latent grid (`align_sentences`).

Nothing is imported here, so `import refrain.text.lrc` stays cheap (no torch, no espeak).
"""
