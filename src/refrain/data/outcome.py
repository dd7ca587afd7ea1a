"""The result of preparing one audio file: its record (if kept) and every issue found on the way."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from refrain.data.issues import Issue, status_of


@dataclass
class FileOutcome:
    """One file's fate. `record` is None exactly when the file was skipped."""

    audio: str
    key: str
    issues: list[Issue] = field(default_factory=list)
    record: dict[str, Any] | None = None

    @property
    def status(self) -> str:
        return status_of(self.issues)

    def to_dict(self) -> dict[str, Any]:
        return {
            "audio": self.audio,
            "key": self.key,
            "status": self.status,
            "issues": [issue.to_dict() for issue in self.issues],
            "record": self.record,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FileOutcome:
        return cls(
            audio=data["audio"],
            key=data["key"],
            issues=[Issue.from_dict(issue) for issue in data.get("issues", [])],
            record=data.get("record"),
        )
