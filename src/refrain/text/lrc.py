"""LRC lyric files: `[mm:ss.xx]text` lines plus `[ar:]`/`[ti:]`/`[al:]`/`[by:]`/`[offset:]` tags.

Real LRC files are messy (hand edits, several writers' dialects), so parsing never raises: a line
it cannot read is skipped and reported in `LrcFile.malformed` as (line number, reason).

One policy for preparation and sampling: a malformed line is dropped and the rest of the file is
used; the drop is never silent (`LrcFile.malformed_note()` is the sentence both print: a
`malformed_lrc` entry in the dataset report, a note on the generated song). `looks_like_lrc` counts
a malformed timestamp line as an LRC line, so one typo does not turn the file into plain text.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from refrain.errors import RefrainInputError

log = logging.getLogger(__name__)

# LRC's mm is two digits; anything longer than this is a typo, not a 100-minute song.
MAX_MINUTES = 99

_GROUP = re.compile(r"\[([^\[\]]*)\]")
_TIMESTAMP = re.compile(r"^\s*(\d+):(\d+)(?:[.:](\d{1,3}))?\s*$")
_TAG = re.compile(r"^\s*([A-Za-z#][A-Za-z0-9_#-]*)\s*:(.*)$", re.DOTALL)
_WORD_TIME = re.compile(r"<\d+:\d+(?:[.:]\d+)?>")


@dataclass
class LrcLine:
    """One sung line: its start in seconds (offset already applied) and its text."""

    time: float
    text: str


@dataclass
class LrcFile:
    """Parsed LRC: lines sorted by time, ID tags (lower-case keys), the lines skipped, and where it came from."""

    lines: list[LrcLine]
    tags: dict[str, str] = field(default_factory=dict)
    malformed: list[tuple[int, str]] = field(default_factory=list)
    source: str = "<string>"

    def malformed_note(self) -> str | None:
        """What was dropped, for a report or a warning: count, first line number and reason; None if nothing."""
        if not self.malformed:
            return None
        number, reason = self.malformed[0]
        return (
            f"{len(self.malformed)} line(s) dropped as malformed LRC, first at line {number}: {reason}; "
            "write times as [mm:ss.xx]"
        )


def lines_after(lines: Iterable[LrcLine], seconds: float) -> list[LrcLine]:
    """The lines that start at or after `seconds`: outside a song (or clip) of that length, so never sung."""
    return [line for line in lines if line.time >= seconds and line.text.strip()]


def lines_after_note(lines: Sequence[LrcLine], seconds: float) -> str | None:
    """`N of M lyric lines start after X s (first: [mm:ss.xx]text)`, or None when every line fits."""
    sung = [line for line in lines if line.text.strip()]
    late = lines_after(sung, seconds)
    if not late:
        return None
    first = late[0]
    return (
        f"{len(late)} of {len(sung)} lyric lines start after {seconds:g} s "
        f"(first: {format_timestamp(first.time)}{first.text})"
    )


class _Malformed(Exception):
    """A timestamp group that looks like a timestamp but is not a valid one."""


def _timestamp_seconds(group: str) -> float | None:
    """Seconds for a `mm:ss[.xx]` group; None if it is not a timestamp at all; raise if it is a bad one."""
    match = _TIMESTAMP.match(group)
    if match is None:
        if re.search(r"\d", group) and ":" in group and not _TAG.match(group):
            raise _Malformed(f"bad timestamp '[{group}]'")
        return None
    minutes, seconds, fraction = int(match[1]), int(match[2]), match[3]
    if minutes > MAX_MINUTES:
        raise _Malformed(f"minutes out of range in '[{group}]' (at most {MAX_MINUTES})")
    if seconds >= 60:
        raise _Malformed(f"seconds out of range in '[{group}]' (must be below 60)")
    frac = int(fraction) / 10 ** len(fraction) if fraction else 0.0
    return 60.0 * minutes + seconds + frac


def _parse_offset(value: str) -> float:
    """Offset tag value (milliseconds, may be signed) -> seconds."""
    return float(int(value.strip().replace(" ", ""))) / 1000.0


def parse_lrc(text: str, source: str = "<string>") -> LrcFile:
    """Parse LRC text; never raises on content.

    - `[00:12.00][00:45.30]text` yields the line twice; `[mm:ss]`, `.x`, `.xx`, `.xxx` and `mm:ss:xx`
      are accepted; enhanced-LRC word times (`<00:12.50>`) are stripped from the text.
    - `[offset:+500]` is in milliseconds and, as in the LRC convention, a positive offset makes the
      lyrics appear earlier: every time becomes `time - offset / 1000`, clamped at 0. The offset is
      applied here, so `lines` are final times; `tags["offset"]` keeps the raw value for reference.
    - Timestamp lines with empty text (instrumental gaps) are dropped; lines are sorted by time (stable).
    - Skipped and reported in `malformed`: bad timestamps (`[1:2x.00]`), minutes/seconds out of range,
      text without a timestamp, an unreadable offset. `source` (the file name) is kept on the result.
    """
    lines: list[LrcLine] = []
    tags: dict[str, str] = {}
    malformed: list[tuple[int, str]] = []
    offset_line = 0
    for number, raw in enumerate(text.lstrip("\ufeff").splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        times: list[float] = []
        rest = line
        try:
            while (match := _GROUP.match(rest)) is not None:
                seconds = _timestamp_seconds(match[1])
                if seconds is None:
                    break
                times.append(seconds)
                rest = rest[match.end() :].lstrip()
        except _Malformed as err:
            malformed.append((number, str(err)))
            continue
        if not times:
            tag = _GROUP.fullmatch(line)
            tag_match = _TAG.match(tag[1]) if tag else None
            if tag_match:
                key = tag_match[1].strip().lower()
                tags[key] = tag_match[2].strip()
                if key == "offset":
                    offset_line = number
            else:
                malformed.append((number, "text without a timestamp"))
            continue
        lyric = " ".join(_WORD_TIME.sub(" ", rest).split())
        if lyric:
            lines.extend(LrcLine(time=t, text=lyric) for t in times)
    offset = 0.0
    if "offset" in tags:
        try:
            offset = _parse_offset(tags["offset"])
        except ValueError:
            malformed.append(
                (offset_line, f"bad offset tag value {tags['offset']!r} (milliseconds expected)")
            )
    if offset:
        lines = [LrcLine(time=max(0.0, round(line.time - offset, 6)), text=line.text) for line in lines]
    lines.sort(key=lambda line: line.time)
    malformed.sort()
    return LrcFile(lines=lines, tags=tags, malformed=malformed, source=source)


def read_text_file(path: str | Path) -> str:
    """A text file's content: UTF-8 (BOM allowed), UTF-16 with a BOM, or a legacy encoding that
    `refrain.text.encoding.decode_text` recognises (logged as a warning, naming the encoding).
    RefrainInputError for a missing file or one that no encoding fits."""
    from refrain.text.encoding import describe_encoding, read_text_with_encoding

    path = Path(path)
    if not path.is_file():
        raise RefrainInputError(path, "file not found", "check the path")
    text, encoding = read_text_with_encoding(path)
    if encoding is None:
        raise RefrainInputError(path, describe_encoding(None) or "unreadable text", "re-save it as UTF-8")
    note = describe_encoding(encoding)
    if note:
        log.warning("%s: not UTF-8; %s", path, note)
    return text


def load_lrc(path: str | Path) -> LrcFile:
    """Read and parse an LRC file (see `parse_lrc`)."""
    return parse_lrc(read_text_file(path), source=str(path))


def format_timestamp(seconds: float) -> str:
    """`[mm:ss.xx]` rounded to hundredths (59.999 s becomes `[01:00.00]`, not `[00:60.00]`)."""
    centis = max(0, round(seconds * 100))
    minutes, rest = divmod(centis, 6000)
    return f"[{minutes:02d}:{rest // 100:02d}.{rest % 100:02d}]"


def format_lrc(lines: Iterable[LrcLine], tags: dict[str, str] | None = None) -> str:
    """LRC text for `lines` (one `[mm:ss.xx]text` per line), tags first; `parse_lrc` reads it back."""
    head = [f"[{key}:{value}]" for key, value in (tags or {}).items() if key != "offset"]
    body = [f"{format_timestamp(line.time)}{line.text}" for line in lines]
    return "\n".join([*head, *body]) + "\n" if head or body else ""


def looks_like_lrc(text: str) -> bool:
    """True when most non-empty lines start with a timestamp, valid or malformed (tag-only lines are not
    counted). Preparation and sampling both decide with this."""
    timed = other = 0
    for raw in text.lstrip("\ufeff").splitlines():
        line = raw.strip()
        match = _GROUP.match(line)
        if not line:
            continue
        try:
            seconds = _timestamp_seconds(match[1]) if match else None
        except _Malformed:
            seconds = -1.0  # a timestamp with a typo is still an LRC line (parse_lrc reports it)
        if seconds is not None:
            timed += 1
        elif not (match and match.end() == len(line) and _TAG.match(match[1])):
            other += 1
    return timed > 0 and timed >= other
