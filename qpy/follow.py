"""Waiting for jobs and following their output, in the user's own ``qpy`` process.

``qpy wait`` and ``qpy log -f`` block until jobs end. The master answers a blocked
``wait`` request the moment it records the last end (``qpy_master/waiting.py``); a
request blocks for a bounded time, and this side then asks again for what is still
pending. When the connection breaks (the master was restarted, or killed), the next
request reconnects, starting the master as any command does, and the wait goes on: the
jobs it waits for were resolved to IDs by the first request, so nothing is waited for
twice or forgotten.

Output is followed by reading the file again every ``INTERVAL`` (a job on another node
writes through the shared file system, where no change notification reaches this host);
the job's end, which comes as an event, ends the follow at once with a last read.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import BinaryIO

from qpy import trace
from qpy.client import ClientError
from qpy.errors import retried

BLOCK = 30.0  # seconds a wait request blocks in the master before this side asks again
RETRY_FOR = 60.0  # seconds of failing to reach the master before a wait gives up
INTERVAL = 0.2  # seconds between reads of a followed output file
Request = Callable[[dict], dict]


def succeeded(job: dict) -> bool:
    return job["status"] == "done" and job.get("exit_code") == 0 and job.get("signal") is None


def outcome(job: dict) -> str:
    """How a job ended, in one line: ``job 7 done, exit 3``, ``job 8 killed, signal 15:
    time limit 00:10:00``, ``job 9 undone``."""
    text = f"job {job['id']} {job['status']}"
    if job.get("signal") is not None:
        text += f", signal {job['signal']}"
    elif job.get("exit_code") is not None:
        text += f", exit {job['exit_code']}"
    return text + (f": {job['reason']}" if job.get("reason") else "")


class Waited:
    """What a wait found: ended job records by ID, IDs still pending (after a timeout),
    and IDs that were cleaned before their end could be seen."""

    def __init__(self) -> None:
        self.ended: dict[int, dict] = {}
        self.pending: list[int] = []
        self.gone: list[int] = []

    def failed(self) -> list[dict]:
        return [self.ended[i] for i in sorted(self.ended) if not succeeded(self.ended[i])]


def wait_jobs(request: Request, sel: dict, timeout: float | None) -> Waited:
    """Wait until every selected job has ended or ``timeout`` seconds have passed. The
    first request resolves the selection (an ID that names no job is an error); then the
    pending IDs are waited for until none is left."""
    deadline = None if timeout is None else time.monotonic() + timeout
    result = Waited()
    reply = retried(request, {"type": "wait", "select": sel, "timeout": 0.0}, RETRY_FOR)
    known = {j["id"] for j in reply["jobs"]} | set(reply["pending"])
    missing = [i for i in sel.get("ids", ()) if i not in known]
    if missing:
        raise ClientError(f"job {missing[0]} not found", "not_found")
    while True:
        trace.mark("wait: reply")
        result.ended.update((j["id"], j) for j in reply["jobs"])
        asked, result.pending = result.pending, reply["pending"]
        result.gone += [i for i in asked if i not in result.ended and i not in result.pending]
        left = BLOCK if deadline is None else min(BLOCK, deadline - time.monotonic())
        if not result.pending or left <= 0:
            return result
        try:
            reply = retried(request, {"type": "wait", "select": {"ids": result.pending},
                                      "timeout": left}, RETRY_FOR)
        except ClientError as exc:
            if exc.code != "not_found":
                raise
            reply = {"jobs": [], "pending": []}  # every one of them was cleaned meanwhile


# -- output files ---------------------------------------------------------------------------


def tail_offset(path: str, lines: int | None) -> int:
    """Where the last ``lines`` lines of ``path`` start (0: all of it, or no file)."""
    try:
        with open(path, "rb") as f:
            return last_lines(f, lines)
    except OSError:
        return 0


def last_lines(f: BinaryIO, lines: int | None) -> int:
    """Where the last ``lines`` lines of the open file ``f`` start (0: all of it), read
    backwards from its end: a long file is not read through (``qpy log -n``, and the
    admin's ``qpy-admin log -n``)."""
    if lines is None:
        return 0
    end = f.seek(0, os.SEEK_END)
    if lines <= 0:
        return end
    pos, seen = end, 0  # newlines seen after pos, the last line's own not counted
    while pos > 0:
        step = min(1 << 16, pos)
        pos -= step
        f.seek(pos)
        data = f.read(step)
        if pos + step == end and data.endswith(b"\n"):
            data = data[:-1]
        count = data.count(b"\n")
        if seen + count >= lines:
            cut = len(data)
            for _ in range(lines - seen):
                cut = data.rindex(b"\n", 0, cut)
            return pos + cut + 1
        seen += count
    return 0


def copy_new(path: str, out, offset: int) -> int:
    """Write what ``path`` holds past ``offset`` to ``out``; the new offset. A file that
    shrank was started again (a new run): it is read from its start."""
    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size < offset:
                offset = 0
            f.seek(offset)
            while data := f.read(1 << 20):
                offset += len(data)
                _write(out, data)
    except FileNotFoundError:
        return offset
    return offset


def _write(out, data: bytes) -> None:
    buffer = getattr(out, "buffer", None)
    if buffer is not None:
        out.flush()
        buffer.write(data)
        buffer.flush()
    else:
        out.write(data.decode(errors="replace"))
        out.flush()


def follow(path: str, out, offset: int, done: threading.Event) -> None:
    """Copy what is written to ``path`` until ``done`` is set, then what is left."""
    while True:
        over = done.is_set()
        offset = copy_new(path, out, offset)
        if over:
            return
        done.wait(INTERVAL)
