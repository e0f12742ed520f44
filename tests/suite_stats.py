"""Counters for the one summary line the test run ends with (not collected: no ``test_``).

    qpy fault suite: faults injected N, messages fuzzed M, jobs run J, jobs lost L

Tests call ``add(name, n)``. The counts live in this module and are also written to one
JSON file per pytest session (under the temporary directory, named in the environment
variable ``QPY_SUITE_STATS`` so that processes started by the run add to the same file),
so the summary sees what every process of the session added without needing xdist.
``pytest_terminal_summary`` at the end of ``conftest.py`` prints ``summary_line()``.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from pathlib import Path

NAMES = ("faults_injected", "messages_fuzzed", "jobs_run", "jobs_lost")
ENV = "QPY_SUITE_STATS"

counts: dict[str, int] = dict.fromkeys(NAMES, 0)  # what this process added
_owner = False  # this process chose the file (and removes it at the end)


def path() -> Path:
    """This session's counter file, chosen once (by the first process that asks) and
    passed on to child processes through the environment."""
    global _owner
    name = os.environ.get(ENV)
    if not name:
        name = os.path.join(tempfile.gettempdir(), f"qpy-suite-stats-{os.getpid()}.json")
        Path(name).unlink(missing_ok=True)  # left by an earlier process with this PID
        os.environ[ENV] = name
        _owner = True
    return Path(name)


def start() -> None:
    """Choose the session's file before any test starts a process."""
    path()


def add(name: str, n: int = 1) -> None:
    """Add ``n`` to counter ``name`` (one of NAMES)."""
    if name not in NAMES:
        raise ValueError(f"unknown suite counter {name!r}; expected one of {', '.join(NAMES)}")
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise ValueError(f"suite counter {name}: expected a count >= 0, not {n!r}")
    counts[name] += n
    with open(path(), "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        stored = _parse(f.read())
        stored[name] += n
        f.seek(0)
        f.truncate()
        f.write(json.dumps(stored))


def _parse(text: str) -> dict[str, int]:
    totals = dict.fromkeys(NAMES, 0)
    try:
        data = json.loads(text) if text.strip() else {}
    except ValueError:
        data = {}
    if isinstance(data, dict):
        for name in NAMES:
            if isinstance(data.get(name), int):
                totals[name] = data[name]
    return totals


def totals() -> dict[str, int]:
    """What every process of this session added (this process's counts if the file is gone)."""
    try:
        return _parse(path().read_text())
    except OSError:
        return dict(counts)


def summary_line() -> str:
    t = totals()
    return (f"qpy fault suite: faults injected {t['faults_injected']}, "
            f"messages fuzzed {t['messages_fuzzed']}, jobs run {t['jobs_run']}, "
            f"jobs lost {t['jobs_lost']}")


def finish() -> str:
    """The summary line; the session's file is removed if this process chose it."""
    line = summary_line()
    if _owner:
        path().unlink(missing_ok=True)
    return line
