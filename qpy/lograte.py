"""Rate limits for the daemons' logs, so that a peer who repeats a refused request
thousands of times cannot fill the disk or bury what matters.

Lines are grouped by their logger, level and format, and by the record's ``rate_key``
(``extra={"rate_key": ...}``, e.g. the peer) or else by their text: each group may write
BURST lines at once and then one every INTERVAL seconds. The next line a group writes
after some were held back says how many.
"""

from __future__ import annotations

import logging
import threading
import time

BURST = 100
INTERVAL = 2.0
MAX_GROUPS = 10_000


class RepeatFilter(logging.Filter):
    """A token bucket per group of lines (see the module's docstring)."""

    def __init__(self, burst: int = BURST, interval: float = INTERVAL) -> None:
        super().__init__()
        self.burst, self.interval = burst, interval
        self._lock = threading.Lock()
        self._groups: dict[tuple, list[float]] = {}  # key -> [tokens, time, held back]

    def filter(self, record: logging.LogRecord) -> bool:
        rate_key = getattr(record, "rate_key", None)
        key = (record.name, record.levelno, str(record.msg),
               rate_key if rate_key is not None else record.getMessage())
        now = time.monotonic()
        with self._lock:
            group = self._groups.get(key)
            if group is None:
                if len(self._groups) >= MAX_GROUPS:
                    self._forget(now)
                group = self._groups[key] = [float(self.burst), now, 0]
            group[0] = min(self.burst, group[0] + (now - group[1]) / self.interval)
            group[1] = now
            if group[0] < 1:
                group[2] += 1
                return False
            group[0] -= 1
            held, group[2] = int(group[2]), 0
        if held:
            record.msg = f"{record.getMessage()} ({held} more like this held back)"
            record.args = ()
        return True

    def _forget(self, now: float) -> None:
        """Drop the groups that have been quiet long enough to be full again."""
        full = self.burst * self.interval
        for key in [k for k, g in self._groups.items() if now - g[1] >= full and not g[2]]:
            del self._groups[key]
        if len(self._groups) >= MAX_GROUPS:  # all busy: start over rather than grow
            self._groups.clear()


def install(handler: logging.Handler) -> None:
    handler.addFilter(RepeatFilter())
