"""``qpy-admin log [-n N] [-f]``: the multiuser's log, as ``tail`` shows a file.

Read straight from the admin home (the admin owns the file; the multiuser need not run).
Following survives the log's rotation (``qpy.daemon.RotatingLog``): when the file at the
path is a new one, what is left of the old one is printed, then the new one from its
start. It looks for new lines a few times a second: a person reads them, no job waits.
"""

from __future__ import annotations

import os
import time
from typing import IO, BinaryIO

from qpy import follow

POLL = 0.2  # seconds between looks at a followed log


def tail(f: BinaryIO, lines: int | None) -> bytes:
    """The rest of ``f``, or only its last ``lines`` lines."""
    if lines is not None:
        f.seek(follow.last_lines(f, lines))
    return f.read()


def show(path: str, lines: int | None, follow: bool, out: IO[bytes]) -> None:
    """Print the log (its last ``lines``), then, with ``follow``, what is added to it
    until interrupted. OSError if there is no log to read."""
    f = open(path, "rb")  # noqa: SIM115 - replaced when the log is rotated
    try:
        out.write(tail(f, lines))
        out.flush()
        while follow:
            chunk = f.read()
            if chunk:
                out.write(chunk)
                out.flush()
                continue
            if _rotated(path, f):
                f.close()
                f = open(path, "rb")  # noqa: SIM115
                continue
            time.sleep(POLL)
    finally:
        f.close()


def _rotated(path: str, f: BinaryIO) -> bool:
    """Whether the file at ``path`` is no longer the one open as ``f`` (renamed away)."""
    try:
        return not os.path.samestat(os.stat(path), os.fstat(f.fileno()))
    except FileNotFoundError:
        return False  # between the rename and the new file: look again later
