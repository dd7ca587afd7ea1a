"""On real music (a track of the embedded corpus): the MP3 -> clean baseline worsens as the bitrate falls."""

from __future__ import annotations

from immich_memories_music import tracks_dir

from refrain.audio.io import load_audio
from refrain.eval.vae_eval import BASELINE, Clip, evaluate_vae

RATE = 44100


def test_degraded_input_rows_get_worse_as_the_bitrate_falls() -> None:
    track = sorted(tracks_dir().rglob("*.opus"))[0]
    clip = Clip(track.stem, str(track), load_audio(track, RATE, 2, 20.0, 2.0).samples)
    table = evaluate_vae({}, [clip], RATE, ["cbr320", "cbr128", "cbr64"])
    rows = {r["condition"]: r for r in table.means() if r["system"] == BASELINE}
    for better, worse in (("cbr320", "cbr128"), ("cbr128", "cbr64")):
        assert rows[worse]["lsd"] > rows[better]["lsd"], (better, worse)
        assert rows[worse]["hf_energy_db"] > rows[better]["hf_energy_db"], (better, worse)
        assert rows[worse]["mrstft"] > rows[better]["mrstft"], (better, worse)
