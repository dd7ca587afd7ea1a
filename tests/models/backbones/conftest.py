"""Fixtures of the backbone tests: the tiny ACE-Step 1.5 release folder (built once per session)."""

from helpers.ace15 import ace15_release  # noqa: F401
