"""Times and durations as users type and read them: wall-time limits in Slurm's formats,
``--since``/``--until`` moments, ISO 8601 stamps in UTC for ``--json``, and H:MM:SS.

Imported by the CLI, the renderer and the master (the reason ``time limit 00:10:00``), so
it imports only the standard library, and ``datetime`` only where it is needed.
"""

from __future__ import annotations

import re
import time

UNLIMITED = "UNLIMITED"
MAX_LIMIT = 100 * 365 * 86400  # a century: larger values are typing mistakes
_LIMIT_RE = re.compile(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?")
_RELATIVE_RE = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class TimeError(ValueError):
    """A time or duration that cannot be read; the text names it."""


def parse_limit(text: object, where: str = "-t") -> int | None:
    """Seconds of a wall-time limit in Slurm's formats (``M``, ``M:S``, ``H:M:S``,
    ``D-H``, ``D-H:M``, ``D-H:M:S``); None for no limit (``0``, ``UNLIMITED``)."""
    word = str(text).strip()
    if word.upper() == UNLIMITED:
        return None
    match = _LIMIT_RE.fullmatch(word)
    if match is None:
        raise TimeError(f"{where}: time limit {word!r} is not M, M:S, H:M:S, D-H, D-H:M, "
                        "D-H:M:S, 0 or UNLIMITED")
    days, *parts = match.groups()
    numbers = [int(p) for p in parts if p is not None]
    if days is None:  # M, M:S or H:M:S
        scale = {1: (60,), 2: (60, 1), 3: (3600, 60, 1)}[len(numbers)]
        seconds = sum(n * s for n, s in zip(numbers, scale, strict=True))
    else:  # D-H, D-H:M, D-H:M:S
        seconds = int(days) * 86400 + sum(n * s for n, s in zip(numbers, (3600, 60, 1),
                                                                  strict=False))
    if seconds > MAX_LIMIT:
        raise TimeError(f"{where}: time limit {word!r} is longer than a century")
    return seconds or None


def format_limit(seconds: int | float | None) -> str:
    """``00:10:00``, or ``1-02:00:00`` past a day; ``UNLIMITED`` for no limit."""
    if seconds is None:
        return UNLIMITED
    days, rest = divmod(int(seconds), 86400)
    clock = f"{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
    return f"{days}-{clock}" if days else clock


def duration(seconds: float | None) -> str:
    """H:MM:SS, hours not wrapped into days (``qpy check``'s ``%R``); ``-`` if unknown."""
    if seconds is None:
        return "-"
    total = max(0, int(seconds))
    hours, rest = divmod(total, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


def parse_when(text: str, now: float, where: str) -> float:
    """A moment as seconds since the epoch: an ISO date or date and time (local unless it
    names its zone), a time of today, or a span back from now (``90s``, ``30m``, ``2h``,
    ``3d``, ``1w``)."""
    from datetime import date, datetime
    from datetime import time as clock

    word = text.strip()
    match = _RELATIVE_RE.fullmatch(word)
    if match:
        return now - float(match.group(1)) * _UNIT[match.group(2)]
    try:
        moment = datetime.fromisoformat(word)
    except ValueError:
        try:
            moment = datetime.combine(date.fromtimestamp(now), clock.fromisoformat(word))
        except ValueError:
            raise TimeError(f"{where}: {word!r} is not an ISO date or time (2026-12-03, "
                            "2026-12-03T14:00, 14:00) nor a span back from now (2h, 3d)"
                            ) from None
    return moment.timestamp()


def iso(stamp: float | None) -> str | None:
    """ISO 8601 in UTC with microseconds, ``Z`` for the zone; None stays None. Rounded
    to the microsecond as ``qpy.jsonout.sql_iso`` has SQLite do it, to the same text."""
    if stamp is None:
        return None
    whole, micro = divmod(int(stamp * 1e6 + 0.5), 1_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{micro:06d}Z"
