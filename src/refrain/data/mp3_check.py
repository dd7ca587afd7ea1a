"""Detect truncated MP3 files by walking their MPEG frame headers.

libsndfile (mpg123) decodes a cut-off MP3 without complaint and estimates its length from the file
size, so the decoder alone cannot tell a truncated download from a short song. The frame headers
can: a final frame that runs past the end of the file, or fewer frames than the Xing/Info tag
announces, means bytes are missing.
"""

from __future__ import annotations

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
    """What the frame walk found: complete frames, the tag's frame count, and whether bytes are missing."""

    frames: int
    announced_frames: int | None
    truncated: bool
    detail: str = ""


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


def scan_mp3(path: Path) -> Mp3Scan:
    """Walk the frames of an MP3 file; `truncated` is True only on evidence of missing bytes."""
    data = path.read_bytes()
    pos = _skip_id3v2(data)
    frames, announced = 0, None
    while pos + 4 <= len(data):
        length = _frame_length(data[pos : pos + 4])
        if length is None or length < 4:
            break  # trailing tags (ID3v1/APE) or junk: not evidence of truncation
        if pos + length > len(data):
            missing = pos + length - len(data)
            return Mp3Scan(frames, announced, True, f"the last frame lacks {missing} of {length} bytes")
        if frames == 0:
            announced = _announced_frames(data[pos : pos + length])
        frames += 1
        pos += length
    if announced is not None:
        audio_frames = frames - 1  # the Xing/Info frame itself carries no audio
        if audio_frames < announced:
            return Mp3Scan(
                frames, announced, True, f"{audio_frames} of the {announced} frames its header announces"
            )
    return Mp3Scan(frames, announced, False)
