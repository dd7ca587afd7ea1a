"""Load, inspect and save audio files with soundfile (libsndfile: WAV, FLAC, MP3, OGG Vorbis, Opus).

Everything returned is float32 shaped (channels, frames) in [-1, 1]. Partial reads seek and decode
only the requested span: DataLoader workers take random crops from whole songs, and libsndfile's
seeking was measured bit-exact against a full decode for MP3 (mpg123) and Opus.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from refrain.audio.resample import alignment_step
from refrain.errors import RefrainInputError
from refrain.fileio import atomic_path

_CONVERT_FIX = (
    "convert it to WAV/FLAC/MP3/OGG/Opus (e.g. ffmpeg -i in out.flac) or remove it from the dataset"
)
# Input frames of real signal kept on each side of a crop that gets resampled, so the resampler's
# filter sees the true neighbours instead of zeros (measured: 147 frames at 44.1->48 kHz already
# match the whole-file resample to 3e-7).
_RESAMPLE_CONTEXT = 256
BLOCK_FRAMES = 1 << 16  # frames decoded per block: memory per block is independent of the file's length

# Downmix to stereo. ITU-R BS.775: centre and surrounds at -3 dB, LFE dropped. Other layouts use
# the same per-speaker gains; the back centre (Cs) goes to both sides at -6 dB.
_A = 1.0 / math.sqrt(2.0)
_SPEAKER_GAINS = {
    "L": (1.0, 0.0),
    "R": (0.0, 1.0),
    "C": (_A, _A),
    "LFE": (0.0, 0.0),
    "Ls": (_A, 0.0),
    "Rs": (0.0, _A),
    "Lb": (_A, 0.0),
    "Rb": (0.0, _A),
    "Cs": (0.5, 0.5),
}
# Channel order of the default layouts: WAV/FLAC (WAVE_FORMAT_EXTENSIBLE masks) and Ogg (Vorbis
# I spec section 4.3.9, also used by Opus mapping family 1). libsndfile does not reorder channels.
_WAV_LAYOUTS = {
    3: "L R C",
    4: "L R Ls Rs",
    5: "L R C Ls Rs",
    6: "L R C LFE Ls Rs",
    7: "L R C LFE Cs Ls Rs",
    8: "L R C LFE Lb Rb Ls Rs",
}
_OGG_LAYOUTS = {
    3: "L C R",
    4: "L R Ls Rs",
    5: "L C R Ls Rs",
    6: "L C R Ls Rs LFE",
    7: "L C R Ls Rs Cs LFE",
    8: "L C R Ls Rs Lb Rb LFE",
}


@dataclass(frozen=True)
class AudioInfo:
    """Header facts about one audio file, read without decoding it."""

    path: str
    sample_rate: int
    channels: int
    frames: int
    duration: float
    format: str  # libsndfile major format: WAV, FLAC, MP3, OGG, ...
    subtype: str = ""  # codec/sample format: PCM_16, VORBIS, OPUS, MPEG_LAYER_III, ...


@dataclass
class LoadedAudio:
    """Decoded audio plus what the file originally was (for dataset reports and crop bookkeeping)."""

    samples: np.ndarray  # float32 (channels, frames) in [-1, 1] at `sample_rate`
    sample_rate: int
    original_sample_rate: int
    original_channels: int
    original_frames: int  # length of the whole file in its own frames, not of the crop
    nonfinite_repaired: int  # NaN/inf sample values replaced by 0
    clipped: int = 0  # sample values of the file beyond full scale (float files), clipped to [-1, 1]


def audio_info(path: str | os.PathLike) -> AudioInfo:
    """Read the header; RefrainInputError for a missing, empty or undecodable file."""
    path = Path(path)
    if not path.exists():
        raise RefrainInputError(path, "file not found", "check the path (relative paths start at the cwd)")
    if not path.is_file():
        raise RefrainInputError(path, "is not a regular file", "pass the path of an audio file")
    if path.stat().st_size == 0:
        raise RefrainInputError(path, "file is empty (0 bytes)", "re-export or re-download it, or remove it")
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as exc:
        if _looks_like_text(path):
            raise RefrainInputError(
                path, "is a text file, not audio", "replace it with the real audio file or remove it"
            ) from exc
        raise RefrainInputError(path, f"not a readable audio file ({_reason(exc)})", _CONVERT_FIX) from exc
    if info.frames <= 0 or info.samplerate <= 0:
        raise RefrainInputError(
            path, "contains no audio frames", "re-export it or remove it from the dataset"
        )
    return AudioInfo(
        path=str(path),
        sample_rate=int(info.samplerate),
        channels=int(info.channels),
        frames=int(info.frames),
        duration=info.frames / info.samplerate,
        format=str(info.format),
        subtype=str(info.subtype),
    )


def load_audio(
    path: str | os.PathLike,
    sample_rate: int | None = None,
    channels: int = 2,
    offset_seconds: float = 0.0,
    duration_seconds: float | None = None,
) -> LoadedAudio:
    """Decode `path` (or the span offset..offset+duration of it) to float32 (channels, frames).

    Mono is duplicated to stereo, more channels are folded by `downmix_matrix`; `channels=1`
    averages the stereo result. A crop is the same samples as slicing the whole-file load at
    round(offset * rate) (to float rounding), with round(duration * rate) frames; a span that runs
    past the end of the file comes back shorter. Decoding, folding and resampling run block by
    block, so memory beyond the returned array stays bounded whatever the file's length.
    """
    if channels not in (1, 2):
        raise ValueError(f"channels must be 1 or 2, got {channels}")
    info = audio_info(path)
    src_sr, dst_sr = info.sample_rate, int(sample_rate or info.sample_rate)
    first, count = _span(info, offset_seconds, duration_seconds, dst_sr)
    read_start, body_start, body_end, skip = _read_plan(info, first, count, dst_sr)
    read_end = body_end + _RESAMPLE_CONTEXT * (src_sr != dst_sr)
    out = _Assembler(channels, count, skip, src_sr, dst_sr)
    nonfinite = clipped = 0
    decoded_end = read_start
    for start, raw in read_blocks(info, read_start, read_end - read_start):
        lo, hi = max(body_start - start, 0), min(body_end - start, raw.shape[0])
        raw, bad = _repair_nonfinite(raw, lo, hi)
        nonfinite += bad
        clipped += int(np.count_nonzero(np.abs(raw[lo:hi]) > 1.0)) if hi > lo else 0
        out.add(fold_channels(raw.T, channels, info.format))
        decoded_end = start + raw.shape[0]
    if min(body_end, decoded_end) <= body_start:  # the decoder may stop before the announced end
        raise RefrainInputError(path, "no audio could be decoded", _CONVERT_FIX)
    audio = out.finish()
    np.clip(audio, -1.0, 1.0, out=audio)
    return LoadedAudio(
        samples=audio,
        sample_rate=dst_sr,
        original_sample_rate=src_sr,
        original_channels=info.channels,
        original_frames=info.frames,
        nonfinite_repaired=nonfinite,
        clipped=clipped,
    )


class _Assembler:
    """Collects folded blocks, resamples them as one stream (soxr's ResampleStream gives the same
    samples as a one-shot call on the whole read) and keeps output frames skip..skip+count."""

    def __init__(self, channels: int, count: int, skip: int, src_sr: int, dst_sr: int) -> None:
        self.out = np.empty((channels, count), dtype=np.float32)
        self.filled, self.skip = 0, skip
        self.stream = (
            soxr.ResampleStream(src_sr, dst_sr, channels, dtype="float32", quality="HQ")
            if src_sr != dst_sr
            else None
        )

    def add(self, block: np.ndarray, last: bool = False) -> None:
        if self.stream is not None:
            block = self.stream.resample_chunk(np.ascontiguousarray(block.T), last=last).T
        drop = min(self.skip, block.shape[1])
        self.skip -= drop
        take = min(block.shape[1] - drop, self.out.shape[1] - self.filled)
        self.out[:, self.filled : self.filled + take] = block[:, drop : drop + take]
        self.filled += take

    def finish(self) -> np.ndarray:
        if self.stream is not None:
            self.add(np.zeros((self.out.shape[0], 0), dtype=np.float32), last=True)
        return self.out[:, : self.filled]


def save_audio(
    path: str | os.PathLike, samples: np.ndarray, sample_rate: int, subtype: str = "PCM_24"
) -> Path:
    """Write (channels, frames) or (frames,) audio as WAV or FLAC (by suffix), atomically.

    The data goes to a temporary file in the same folder and is moved over `path` with os.replace,
    so a crash never leaves a half-written file where a good one was. Samples are clipped to
    [-1, 1] first: libsndfile's float-to-PCM conversion wraps around instead of clipping.
    """
    path = Path(path)
    formats = {".wav": "WAV", ".flac": "FLAC"}
    fmt = formats.get(path.suffix.lower())
    if fmt is None:
        raise RefrainInputError(path, f"cannot write '{path.suffix}' files", "use a .wav or .flac path")
    data = np.asarray(samples, dtype=np.float32)
    data = data[None] if data.ndim == 1 else data
    if data.ndim != 2 or data.shape[0] > 64:
        raise RefrainInputError(
            path, f"samples shaped {data.shape} are not (channels, frames)", "transpose them"
        )
    bad = int(np.size(data) - np.count_nonzero(np.isfinite(data)))
    if bad:
        raise RefrainInputError(
            path, f"{bad} sample values are NaN/inf", "check the model output before saving"
        )
    with atomic_path(path) as tmp:
        sf.write(str(tmp), np.clip(data, -1.0, 1.0).T, int(sample_rate), format=fmt, subtype=subtype)
    return path


def downmix_matrix(channels: int, container: str = "WAV") -> np.ndarray:
    """(2, channels) gains that fold a multichannel layout to stereo without clipping.

    Layouts of 3-8 channels follow the container's default channel order (Ogg differs from
    WAV/FLAC); 5.1 is the ITU-R BS.775 downmix. Beyond 8 channels, even-numbered channels go left
    and odd-numbered ones right. Each output row is scaled so its gains sum to at most 1, so a
    full-scale input can never clip (5.1 therefore sits 7.7 dB lower; the scale is fixed per
    layout, so every crop of a song gets the same gain).
    """
    layouts = _OGG_LAYOUTS if container.upper() == "OGG" else _WAV_LAYOUTS
    if channels in layouts:
        gains = np.array([_SPEAKER_GAINS[name] for name in layouts[channels].split()], dtype=np.float64).T
    else:
        gains = np.zeros((2, channels))
        gains[0, 0::2] = 1.0
        gains[1, 1::2] = 1.0
    return (gains / gains.sum(axis=1).max()).astype(np.float32)


def fold_channels(audio: np.ndarray, channels: int = 2, container: str = "WAV") -> np.ndarray:
    """(C, T) -> (channels, T): duplicate mono, keep stereo, downmix the rest; 1 = mean of L and R."""
    if audio.shape[0] == 1:
        stereo = np.repeat(audio, 2, axis=0)
    elif audio.shape[0] == 2:
        stereo = audio
    else:
        stereo = downmix_matrix(audio.shape[0], container) @ audio
    if channels == 1:
        return stereo.mean(axis=0, keepdims=True, dtype=np.float32)
    return np.array(stereo, dtype=np.float32)


def _span(info: AudioInfo, offset: float, duration: float | None, rate: int) -> tuple[int, int]:
    """First frame and frame count of the requested span at the output `rate`."""
    if not math.isfinite(offset) or offset < 0:
        raise RefrainInputError(info.path, f"offset {offset} s is invalid", "use an offset >= 0")
    total = (2 * info.frames * rate + info.sample_rate) // (2 * info.sample_rate)  # soxr's length
    first = round(offset * rate)
    if first >= total:
        raise RefrainInputError(
            info.path,
            f"offset {offset:.3f} s is past the end of the {info.duration:.3f} s file",
            "pick an offset below the file's duration",
        )
    if duration is None:
        return first, total - first
    if not math.isfinite(duration) or duration <= 0:
        raise RefrainInputError(info.path, f"duration {duration} s is invalid", "use a duration > 0")
    return first, min(round(duration * rate), total - first)


def _read_plan(info: AudioInfo, first: int, count: int, rate: int) -> tuple[int, int, int, int]:
    """Which source frames to decode for output frames first..first+count at `rate`.

    Returns (read_start, body_start, body_end, skip): decode from read_start, the span itself is
    source frames body_start..body_end, and the wanted output starts `skip` frames into the
    resampled read. When resampling, the read starts on a source frame that maps to a whole
    output frame (a multiple of `alignment_step`) with up to _RESAMPLE_CONTEXT frames of real
    signal before it, so the crop lands on the whole-file output grid and no edge sees zeros.
    """
    src = info.sample_rate
    if src == rate:
        return first, first, first + count, 0
    step = alignment_step(src, rate)
    grid = step if step <= 16 * _RESAMPLE_CONTEXT else 1  # odd rate pairs: nearest frame instead
    body_start = (first * src // rate) // grid * grid
    pre = min(body_start, max(_RESAMPLE_CONTEXT, grid)) // grid * grid
    body_end = min(-(-(first + count) * src // rate), info.frames)
    skip = pre * rate // src + first - body_start * rate // src
    return body_start - pre, body_start, body_end, skip


def read_blocks(
    info: AudioInfo, start: int = 0, frames: int | None = None
) -> Iterator[tuple[int, np.ndarray]]:
    """Seek to `start` and decode up to `frames` frames (default: to the end) as float32 (n, channels).

    Yields (first frame, block) of at most BLOCK_FRAMES each, so a pass over a two-hour file holds
    one block at a time; stops where the decoder runs out of data (which may be before the header's
    frame count). Values are as decoded: NaN/inf and overs beyond [-1, 1] are left for the caller.
    """
    frames = info.frames - start if frames is None else frames
    try:
        with sf.SoundFile(info.path) as handle:
            if start:
                handle.seek(start)
            done = 0
            while done < frames:
                block = handle.read(min(BLOCK_FRAMES, frames - done), dtype="float32", always_2d=True)
                if block.shape[0] == 0:
                    return
                yield start + done, block
                done += block.shape[0]
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise RefrainInputError(info.path, f"decoding failed ({_reason(exc)})", _CONVERT_FIX) from exc


def _repair_nonfinite(raw: np.ndarray, first: int, end: int) -> tuple[np.ndarray, int]:
    """Zero NaN/inf values (float WAV can hold them); count those in the frames first..end.

    Frames outside that range are resampler context, repaired but not counted.
    """
    finite = np.isfinite(raw)
    if finite.all():
        return raw, 0
    bad = int(finite[first:end].size - np.count_nonzero(finite[first:end]))
    return np.where(finite, raw, np.float32(0.0)), bad


def _reason(exc: BaseException) -> str:
    """libsndfile's own one-line reason, without the path soundfile prepends."""
    text = getattr(exc, "error_string", None) or str(exc)
    return " ".join(str(text).split()).rstrip(".")


def _looks_like_text(path: Path) -> bool:
    """True when the first KiB is printable ASCII (a lyrics or HTML file saved under an audio name)."""
    with path.open("rb") as handle:
        head = handle.read(1024)
    printable = sum(32 <= byte < 127 or byte in (9, 10, 13) for byte in head)
    return bool(head) and printable >= 0.95 * len(head)
