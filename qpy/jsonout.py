"""``--json`` output: one JSON object per command, ``{"version": 1, <payload>}``.

The payload's records are the wire records with their times as ISO 8601 in UTC (``Z``),
durations in seconds and memory in GB, as the manual's "JSON output" documents. Scripts
read ``version`` first: a change that could break them gets a new number.
"""

from __future__ import annotations

import json
import time

from qpy.timetext import iso

VERSION = 1
TIMES = ("t_queue", "t_start", "t_end")


def document(**payload: object) -> str:
    """The one line a ``--json`` command prints."""
    return json.dumps({"version": VERSION, **payload}) + "\n"


def job(record: dict) -> dict:
    """A job as ``check --json`` shows it."""
    out = dict(record)
    for name in TIMES:
        out[name] = iso(record.get(name))
    return out


def run(record: dict, now: float | None = None) -> dict:
    """A run as ``history --json`` shows it, with its elapsed time (so far, if it goes
    on)."""
    out = job(record)
    start, end = record.get("t_start"), record.get("t_end")
    out["elapsed"] = None if start is None else round(
        (end if end is not None else now or time.time()) - start, 6)
    return out
