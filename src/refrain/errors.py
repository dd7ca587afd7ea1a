"""One error type for bad user input, so every message has the same one-line shape."""

from __future__ import annotations

from pathlib import Path


class RefrainInputError(ValueError):
    """Bad user input: a file, a config key, a flag. The message names the culprit and the fix."""

    def __init__(self, subject: str | Path, problem: str, fix: str) -> None:
        self.subject = str(subject)
        self.problem = problem
        self.fix = fix
        super().__init__(f"{self.subject}: {problem}. Fix: {fix}")
