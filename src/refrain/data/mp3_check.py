"""Detect truncated and internally damaged MP3 files by walking their MPEG frame headers.

libsndfile (mpg123) decodes a cut-off MP3 without complaint and estimates its length from the file
size, so the decoder alone cannot tell a truncated download from a short song. The frame headers
can: a final frame that runs past the end of the file, or fewer frames than the Xing/Info tag
announces, means bytes are missing. A stretch of bytes that breaks the chain of frames with more
frames after it is damage inside the file: mpg123 resyncs past it and splices the two parts, so
the audio after it (and every lyric time) would shift without a word.
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass
from pathlib import Path

# kbit/s by bitrate index, per (MPEG-1?, layer); index 0 is "free format", 15 is invalid.
_BITRATES = {
    (True, 1): (0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (True, 2): (0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (True, 3): (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (False, 1): (0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (False, 2): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_BITRATES[(False, 3)] = _BITRATES[(False, 2)]
_SAMPLE_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


@dataclass(frozen=True)
class Mp3Scan:
    """What the frame walk found: complete frames, the tag's frame count, whether bytes are missing
    at the end (`truncated`) or a stretch inside cannot be decoded (`corrupt`)."""

    frames: int
    announced_frames: int | None
    truncated: bool
    detail: str = ""
    corrupt: bool = False


def _frame_length(header: bytes) -> int | None:
    """Byte length of the frame starting with this 4-byte header, None if it is not a valid header."""
    if header[0] != 0xFF or header[1] & 0xE0 != 0xE0:
        return None
    version, layer_bits = (header[1] >> 3) & 3, (header[1] >> 1) & 3
    bitrate_index, rate_index, padding = header[2] >> 4, (header[2] >> 2) & 3, (header[2] >> 1) & 1
    if version == 1 or layer_bits == 0 or bitrate_index in (0, 15) or rate_index == 3:
        return None
    layer = 4 - layer_bits
    mpeg1 = version == 3
    bitrate = _BITRATES[(mpeg1, layer)][bitrate_index] * 1000
    rate = _SAMPLE_RATES[version][rate_index]
    if layer == 1:
        return (12 * bitrate // rate + padding) * 4
    per_frame = 144 if (mpeg1 or layer == 2) else 72
    return per_frame * bitrate // rate + padding


def _skip_id3v2(data: bytes) -> int:
    if data[:3] != b"ID3" or len(data) < 10:
        return 0
    size = (data[6] << 21) | (data[7] << 14) | (data[8] << 7) | data[9]
    return 10 + size + (10 if data[5] & 0x10 else 0)


def _announced_frames(frame: bytes) -> int | None:
    """Frame count from a Xing/Info tag in the first frame, when it has one."""
    for marker in (b"Xing", b"Info"):
        at = frame.find(marker)
        if 0 <= at <= 40 and len(frame) >= at + 12:
            flags = int.from_bytes(frame[at + 4 : at + 8], "big")
            if flags & 1:
                return int.from_bytes(frame[at + 8 : at + 12], "big")
    return None


def _same_stream(a: bytes, b: bytes) -> bool:
    """Same MPEG version, layer and sample rate: a false sync in random bytes rarely matches all three."""
    return (a[1] & 0x1E) == (b[1] & 0x1E) and (a[2] & 0x0C) == (b[2] & 0x0C)


def _resync(data: bytes | mmap.mmap, start: int, first: bytes) -> int | None:
    """Offset of the next run of two chained frames like `first` after `start`, None if there is none."""
    pos = data.find(b"\xff", start)
    while pos >= 0 and pos + 4 <= len(data):
        length = _frame_length(data[pos : pos + 4])
        if length is not None and length >= 4 and _same_stream(data[pos : pos + 4], first):
            after = pos + length
            if after + 4 <= len(data):
                nxt = _frame_length(data[after : after + 4])
                if nxt is not None and _same_stream(data[after : after + 4], first):
                    return pos
        pos = data.find(b"\xff", pos + 1)
    return None


def scan_mp3(path: Path) -> Mp3Scan:
    """Walk the frames of an MP3 file; `truncated`/`corrupt` are True only on evidence of damage.

    The file is memory-mapped, so a long file is walked without reading it into memory.
    """
    with path.open("rb") as handle:
        if path.stat().st_size == 0:
            return Mp3Scan(0, None, False)
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return _walk(data)


def _walk(data: bytes | mmap.mmap) -> Mp3Scan:
    pos = _skip_id3v2(data[:10])
    frames, announced, first = 0, None, b""
    while pos + 4 <= len(data):
        length = _frame_length(data[pos : pos + 4])
        if length is None or length < 4:
            resumed = _resync(data, pos + 1, first) if first else None
            if resumed is None:
                break  # trailing tags (ID3v1/APE) or junk: not evidence of damage
            detail = (
                f"{resumed - pos} bytes at byte {pos} (after frame {frames}) are not MP3 frames and "
                "more frames follow"
            )
            return Mp3Scan(frames, announced, False, detail, corrupt=True)
        if pos + length > len(data):
            missing = pos + length - len(data)
            return Mp3Scan(frames, announced, True, f"the last frame lacks {missing} of {length} bytes")
        if frames == 0:
            first = bytes(data[pos : pos + 4])
            announced = _announced_frames(bytes(data[pos : pos + length]))
        frames += 1
        pos += length
    if announced is not None:
        audio_frames = frames - 1  # the Xing/Info frame itself carries no audio
        if audio_frames < announced:
            return Mp3Scan(
                frames, announced, True, f"{audio_frames} of the {announced} frames its header announces"
            )
    return Mp3Scan(frames, announced, False)
