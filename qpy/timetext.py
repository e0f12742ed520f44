"""Times and durations as users type and read them: durations (wall-time limits in
Slurm's formats, the admin's idle times of interactive sessions), ``--since``/``--until``
moments, ISO 8601 stamps in UTC for ``--json``, and H:MM:SS.

Imported by the CLI, the renderer and the master (the reason ``time limit 00:10:00``), so
it imports only the standard library, and ``datetime`` only where it is needed.
"""

from __future__ import annotations

import re
import time

UNLIMITED = "UNLIMITED"
MAX_LIMIT = 100 * 365 * 86400  # a century: larger values are typing mistakes
SLURM, CLOCK = "slurm", "clock"  # the two styles of durations (parse_limit)
_LIMIT_RE = re.compile(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?")
_UNIT_RE = re.compile(r"(\d+)([smhd])")
_RELATIVE_RE = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_REFUSED = {  # why a duration cannot be read, in each style
    SLURM: "{where}: time limit {word!r} is not M, M:S, H:M:S, D-H, D-H:M, D-H:M:S, 0 or "
           "UNLIMITED",
    CLOCK: "{where}: expected a duration like 2-00:00:00, 48:00:00 or 2d, not {word!r}",
}


class TimeError(ValueError):
    """A time or duration that cannot be read; the text names it."""


def parse_limit(text: object, where: str = "-t", style: str = SLURM) -> int | None:
    """Seconds of a duration; None for none (``0``, and ``UNLIMITED`` in Slurm's style).

    One grammar, ``[D-]A[:B[:C]]``, read in one of two styles:

    * SLURM, wall-time limits (``qpy sub -t``, ``time=``): ``M``, ``M:S``, ``H:M:S``,
      ``D-H``, ``D-H:M``, ``D-H:M:S``, as Slurm reads them;
    * CLOCK, the admin's idle times (``idle_warn``, ``idle_limit``): ``[D-]H:MM[:SS]``
      (``H:MM`` is hours and minutes; minutes and seconds have two digits at most and
      stay below 60), a bare number of seconds, or a number with a unit (``90s``,
      ``30m``, ``12h``, ``2d``).
    """
    word = str(text).strip()
    seconds = _seconds(word, style)
    if seconds is None:
        raise TimeError(_REFUSED[style].format(where=where, word=word))
    if seconds > MAX_LIMIT:
        what = "time limit" if style == SLURM else "duration"
        raise TimeError(f"{where}: {what} {word!r} is longer than a century")
    return seconds or None


def _seconds(word: str, style: str) -> int | None:
    """The seconds ``word`` says in ``style``, or None if it is not a duration there."""
    if style == SLURM and word.upper() == UNLIMITED:
        return 0
    unit = _UNIT_RE.fullmatch(word) if style == CLOCK else None
    if unit:
        return int(unit.group(1)) * _UNIT[unit.group(2)]
    match = _LIMIT_RE.fullmatch(word)
    if match is None:
        return None
    days, *parts = match.groups()
    numbers = [int(p) for p in parts if p is not None]
    if style == CLOCK and any(len(p) > 2 or int(p) >= 60 for p in parts[1:] if p):
        return None
    if days is not None or (style == CLOCK and len(numbers) > 1):  # [D-]H[:M[:S]]
        scale = (3600, 60, 1)
    elif style == CLOCK:  # a bare number of seconds
        scale = (1,)
    else:  # M, M:S or H:M:S
        scale = {1: (60,), 2: (60, 1), 3: (3600, 60, 1)}[len(numbers)]
    return int(days or 0) * 86400 + sum(n * s for n, s in zip(numbers, scale, strict=False))


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
