"""``--json`` output: one JSON object per command, ``{"version": 1, <payload>}``.

The payload's records are the wire records with their times as ISO 8601 in UTC (``Z``),
durations in seconds and memory in GB, as the manual's "JSON output" documents. Scripts
read ``version`` first: a change that could break them gets a new number.

``history --json`` of 100,000 runs has SQLite write each ended run's object
(``SQL_RUN``); ``run`` writes the same object in Python for a run still going on.
"""

from __future__ import annotations

import json
import time

from qpy.model import RUN_FIELDS
from qpy.timetext import iso

VERSION = 1
TIMES = ("t_queue", "t_start", "t_end")
COMPACT = (",", ":")


def document(**payload: object) -> str:
    """The one line a ``--json`` command prints."""
    return json.dumps({"version": VERSION, **payload}, separators=COMPACT) + "\n"


def document_of(key: str, array: str) -> str:
    """The same line around an array already written as JSON text."""
    return f'{{"version":{VERSION},"{key}":{array}}}\n'


def job(record: dict) -> dict:
    """A job as ``check --json`` shows it."""
    out = dict(record)
    for name in TIMES:
        out[name] = iso(record.get(name))
    if record.get("idle_since") is not None:  # an interactive session's (qpy connect)
        out["idle_since"] = iso(record["idle_since"])
    return out


def node(record: dict) -> dict:
    """A node as ``status --json`` shows it: since when it is drained, as a time."""
    if record.get("drain_since") is None:
        return record
    return {**record, "drain_since": iso(record["drain_since"])}


def run(record: dict, now: float | None = None) -> dict:
    """A run as ``history --json`` shows it, with its elapsed time (so far, if it goes
    on)."""
    out = job(record)
    start, end = record.get("t_start"), record.get("t_end")
    out["elapsed"] = None if start is None else round(
        (end if end is not None else now or time.time()) - start, 6)
    return out


def dumps(record: dict) -> str:
    return json.dumps(record, separators=COMPACT)


def sql_iso(col: str) -> str:
    """SQLite's text of ``iso(col)``: the same rounding to the microsecond."""
    micro = f"CAST(round({col} * 1000000.0) AS INTEGER)"
    return (f"CASE WHEN {col} IS NULL THEN NULL ELSE strftime('%Y-%m-%dT%H:%M:%S', "
            f"{micro} / 1000000, 'unixepoch') || printf('.%06dZ', {micro} % 1000000) END")


# One ``run`` object per row of the runs table.
SQL_RUN = "json_object(" + ", ".join(
    f"'{name}', {sql_iso(name) if name in TIMES else name}"
    for name in RUN_FIELDS) + ", 'elapsed', round(t_end - t_start, 6))"
