"""Timestamps of the hops a job's start and end take, for ``bench/latency.py --trace``.

Off unless ``QPY_TRACE`` names a file when a process starts (the daemons, launchers and
supervisors inherit it): then ``mark`` appends one line ``NANOSECONDS PID LABEL`` per
hop, on the monotonic clock that every process of this machine shares. When off, a mark
costs one test of a module constant.
"""

from __future__ import annotations

import os
import time

PATH = os.environ.get("QPY_TRACE")
_fd: int | None = None


def mark(label: str) -> None:
    """Record that this process reached ``label`` now."""
    global _fd
    if PATH is None:
        return
    if _fd is None:
        _fd = os.open(PATH, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.write(_fd, f"{time.monotonic_ns()} {os.getpid()} {label}\n".encode())
