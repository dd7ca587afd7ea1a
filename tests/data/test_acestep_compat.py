"""An ACE-Step converter dataset is validated once at load: a container's announced length is not trusted."""

from __future__ import annotations

import logging
from pathlib import Path

import datasets
import soundfile as sf
from helpers.audio import tone

import refrain.data.audio_checks as audio_checks
from refrain.audio.mp3 import Mp3Setting, encode_mp3
from refrain.data.acestep_compat import CHECKS_FILE
from refrain.data.schema import load_prepared


def _row(key: str, path: Path) -> dict:
    return {
        "keys": key,
        "filename": str(path),
        "tags": ["pop"],
        "speaker_emb_path": "",
        "norm_lyrics": "",
        "recaption": {},
    }


def test_a_truncated_mp3_announcing_more_than_it_holds_is_left_out_once(
    tmp_path: Path, write_audio, monkeypatch, caplog
) -> None:
    data = tmp_path / "data"
    good = write_audio(data / "good.wav", seconds=2.0)
    full = encode_mp3(tone(12.0).T, 48_000, Mp3Setting(bitrate_kbps=128))  # its Info tag says 12 s
    cut = data / "cut.mp3"
    cut.write_bytes(full[: len(full) * 157 // 1200])  # 1.57 s of it survive
    assert sf.info(str(cut)).duration > 11.9  # what the container announces
    target = tmp_path / "converted"
    datasets.Dataset.from_list([_row("good", good), _row("cut", cut)] * 2).save_to_disk(str(target))
    with caplog.at_level(logging.WARNING, logger="refrain.data.acestep_compat"):
        loaded = load_prepared(target)
    assert loaded["train"]["keys"] == ["good", "good"]  # no row that would fail in every epoch
    assert abs(loaded["train"][0]["duration"] - 2.0) < 1e-6
    warned = [r.getMessage() for r in caplog.records if "cut.mp3" in r.getMessage()]
    assert len(warned) == 1 and "ends early" in warned[0] and "rows are left out" in warned[0]
    assert (target / CHECKS_FILE).is_file()

    decoded: list[str] = []
    real = audio_checks.measure
    monkeypatch.setattr(audio_checks, "measure", lambda h: decoded.append(h.path) or real(h))
    again = load_prepared(target)
    assert again["train"]["keys"] == ["good", "good"] and decoded == []  # checked once, remembered
