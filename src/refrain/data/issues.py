"""Named problems found while preparing a dataset: a short code for counting, a sentence for people.

Every file that is skipped, repaired or merely noted gets one `Issue` per problem, so the report can
count them by code and still show the human sentence next to each file.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

Severity = Literal["skip", "repair", "note"]

# code -> (severity, what it means for the file). The per-file message adds the specifics.
REASONS: dict[str, tuple[Severity, str]] = {
    "empty_file": ("skip", "the file has zero bytes"),
    "undecodable": ("skip", "the audio cannot be decoded (corrupt, or not audio at all)"),
    "unreadable": ("skip", "the file could not be read from disk"),
    "too_short": ("skip", "the audio is shorter than --min_seconds"),
    "silent": ("skip", "more than 95% of the samples are exact zeros"),
    "all_nonfinite": ("skip", "every sample is NaN or infinite"),
    "failed": ("skip", "preparing it failed unexpectedly (see the log; please report it)"),
    "too_long": ("skip", "the audio is longer than --max_duration"),
    "truncated": ("skip", "the file ends early (cut-off download or copy); re-download or re-export it"),
    "corrupt_stretch": (
        "skip",
        "a stretch inside the file cannot be decoded; the decoder would splice around it and shift the lyrics",
    ),
    "out_of_range": (
        "skip",
        "many samples lie beyond full scale (a level mistake, not clipping); peak-normalise it and re-run",
    ),
    "not_a_file": ("skip", "the name looks like audio but it is not a regular file"),
    "symlink_loop": ("skip", "a link that leads back to itself or to a folder already scanned; not followed"),
    "broken_link": ("skip", "a link whose target does not exist"),
    "bad_file_name": (
        "skip",
        "the path is not valid UTF-8, so it cannot be stored in the dataset; rename it to UTF-8",
    ),
    "duplicate_stem": (
        "skip",
        "another format of the same song sits beside it (same name); one copy is kept so it cannot "
        "land in both train and validation",
    ),
    "nonfinite_repaired": ("repair", "NaN/infinite samples were replaced by zeros"),
    "malformed_lrc": ("repair", "LRC lines without a valid timestamp were dropped"),
    "unsupported_script": ("repair", "lyric lines in a script G2P cannot read were left without phonemes"),
    "resampled_at_load": ("note", "the sample rate differs from 48 kHz; it is resampled at load"),
    "upmixed_at_load": ("note", "mono audio; it is duplicated to stereo at load"),
    "downmixed_at_load": ("note", "more than two channels; they are mixed down to stereo at load"),
    "clipped_at_load": ("note", "a few samples lie beyond full scale; they are clipped to [-1, 1] at load"),
    "no_lyrics": ("note", "no lyrics (missing or empty); kept as instrumental"),
    "no_pronounceable_lyrics": (
        "note",
        "the lyrics hold nothing G2P can pronounce (only emoji, symbols, punctuation or a script it cannot "
        "read); kept as instrumental",
    ),
    "text_encoding": ("note", "a lyrics or tags file is not UTF-8; it was decoded with the encoding named"),
    "text_undecodable": (
        "repair",
        "a lyrics or tags file fits no known text encoding; its unreadable bytes were replaced",
    ),
    "lyrics_past_end": (
        "note",
        "some timed lyric lines start after the audio ends; training crops ignore them",
    ),
    "no_tags": ("note", "no tags found; the record has an empty tag list"),
}


@dataclass(frozen=True)
class Issue:
    """One problem with one file: `code` is a key of REASONS, `message` says the specifics."""

    code: str
    message: str

    @property
    def severity(self) -> Severity:
        return REASONS[self.code][0]

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, str]) -> Issue:
        return cls(code=data["code"], message=data["message"])


def make_issue(code: str, detail: str = "") -> Issue:
    """An Issue whose message is the reason's sentence plus the file-specific detail."""
    if code not in REASONS:
        raise KeyError(f"unknown issue code {code!r}")
    sentence = REASONS[code][1]
    return Issue(code=code, message=f"{sentence} ({detail})" if detail else sentence)


def status_of(issues: list[Issue]) -> Literal["kept", "repaired", "skipped"]:
    """A file is skipped if any issue skips it, repaired if any repairs it, else kept."""
    severities = {issue.severity for issue in issues}
    if "skip" in severities:
        return "skipped"
    if "repair" in severities:
        return "repaired"
    return "kept"
