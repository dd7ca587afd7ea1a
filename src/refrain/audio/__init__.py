"""refrain.audio: load/save/resample audio, MP3 degradation for VAE training, spectrograms.

The spectrogram module is not re-exported here: it pulls in torch and transformers, which the
data-loading code in this package does not need.
"""

from __future__ import annotations

from refrain.audio.io import AudioInfo, LoadedAudio, audio_info, downmix_matrix, load_audio, save_audio
from refrain.audio.mp3 import Mp3Degrader, Mp3Setting, mp3_roundtrip
from refrain.audio.resample import resample

__all__ = [
    "AudioInfo",
    "LoadedAudio",
    "Mp3Degrader",
    "Mp3Setting",
    "audio_info",
    "downmix_matrix",
    "load_audio",
    "mp3_roundtrip",
    "resample",
    "save_audio",
]
