"""Training-time bookkeeping of bad items, shared by the main process and every DataLoader worker.

An item whose data cannot be used (a cache entry holding NaN, a file that no longer decodes) is
quarantined: its file is named once, in one warning, and from then on it is skipped without being
read again, so it costs one item of its batch, not the whole batch every epoch. An item that loads
but needed a repair (NaN samples zeroed, overs clipped) is kept and named once too. The flags live in
shared memory (like the skip counters beside them), so "once" holds across workers, and
`quarantined()` lists what to report at the end of an epoch or a run.
"""

from __future__ import annotations

import logging
import multiprocessing

log = logging.getLogger(__name__)

_CLEAN, _NOTED, _QUARANTINED = 0, 1, 2


class Quarantine:
    """One flag per item index: clean, noted (repaired, still used) or quarantined (skipped from now on)."""

    def __init__(self, size: int, what: str = "item") -> None:
        self.what = what
        self._flags = multiprocessing.Array("b", max(int(size), 1))  # shared with DataLoader workers

    def __len__(self) -> int:
        return len(self._flags)

    def is_quarantined(self, index: int) -> bool:
        return self._flags[int(index) % len(self._flags)] == _QUARANTINED

    def quarantine(self, index: int, name: str, reason: object) -> bool:
        """Mark `index` bad; warns (naming `name` and the reason) only the first time. True if first."""
        slot = int(index) % len(self._flags)
        with self._flags.get_lock():
            first = self._flags[slot] != _QUARANTINED
            self._flags[slot] = _QUARANTINED
        if first:
            log.warning(
                "%s %s is quarantined: %s. It is skipped for the rest of this run (the other items of its "
                "batch are kept); fix or remove it, then resume",
                self.what,
                name,
                reason,
            )
        return first

    def note(self, index: int, name: str, repair: str) -> bool:
        """Name a repaired-but-kept `index` once (a later quarantine still wins). True if first."""
        slot = int(index) % len(self._flags)
        with self._flags.get_lock():
            first = self._flags[slot] == _CLEAN
            if first:
                self._flags[slot] = _NOTED
        if first:
            log.warning(
                "%s %s was repaired while loading: %s (named once; it stays in training)",
                self.what,
                name,
                repair,
            )
        return first

    def quarantined(self) -> list[int]:
        """Indices quarantined so far, by any process."""
        return [slot for slot, flag in enumerate(self._flags[:]) if flag == _QUARANTINED]
