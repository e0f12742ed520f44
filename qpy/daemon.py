"""The start-up and shutdown both daemons share (the per-user master and the multiuser).

A daemon is started in the background by ``qpy.spawn.spawn_daemon`` and reports how its
start-up went on the file descriptor given by ``--ready-fd``: ``ok``, ``busy`` (another
instance holds the lock) or ``error Type: text``. Written once, so both daemons lock,
log, report and clean up the same way and their starters read one wording.
"""

from __future__ import annotations

import argparse
import fcntl
import gc
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO

from qpy import lograte, paths
from qpy.server import Server
from qpy.spawn import report_ready as report

# start(home) builds and starts the server; the callable runs after it has stopped.
Start = Callable[[Path], tuple[Server, Callable[[], None]]]


def run(name: str, home: str | os.PathLike, log_name: str, lock_name: str, pid_name: str,
        start: Start) -> None:
    """Run daemon ``name`` in ``home`` until its server stops (SIGTERM, SIGINT or a
    request), then shut it down and exit (status 1 if it cannot start)."""
    sys.setswitchinterval(0.0002)  # hand the GIL over fast: threads pass events along
    parser = argparse.ArgumentParser(prog=f"qpy-{name}")
    parser.add_argument("--ready-fd", type=int, default=None)
    ready_fd = parser.parse_args().ready_fd
    home = Path(paths.ensure_private_dir(home))
    logging.basicConfig(filename=home / log_name, level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        lograte.install(handler)
    _lock = _lock_or_exit(home / lock_name, ready_fd)  # held until the process exits
    server, shutdown = _start_or_exit(name, home, start, ready_fd)
    gc.freeze()  # what start-up built lives as long as the process: keep it out of GC passes
    signal.signal(signal.SIGTERM, lambda *_: server.stop())
    signal.signal(signal.SIGINT, lambda *_: server.stop())
    pid_file = home / pid_name
    pid_file.write_text(f"{os.getpid()}\n")
    report(ready_fd, "ok\n")
    logging.info("%s %d serving %s", name, os.getpid(), server.address)
    server.wait()
    logging.info("%s stopping", name)
    shutdown()
    pid_file.unlink(missing_ok=True)
    logging.shutdown()
    # The lock goes with the process, not before: who waits for it ('finish') then knows
    # the daemon is gone. No interpreter tear-down: everything is stored and closed.
    os._exit(0)


def _lock_or_exit(path: Path, ready_fd: int | None) -> IO[str]:
    """Hold ``path`` locked for the process's life: one daemon per home. If another holds
    it, report ``busy`` (the starter then connects to that one) and exit."""
    lock = open(path, "a")  # noqa: SIM115 - held for the process lifetime
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        report(ready_fd, "busy\n")
        sys.exit(1)
    return lock


def _start_or_exit(name: str, home: Path, start: Start,
                   ready_fd: int | None) -> tuple[Server, Callable[[], None]]:
    """``start(home)``; if it fails, the starter reads ``error Type: text`` (the log has
    the traceback) and the daemon exits."""
    try:
        return start(home)
    except Exception as exc:
        logging.exception("%s start-up failed", name)
        report(ready_fd, f"error {type(exc).__name__}: {exc}\n")
        sys.exit(1)
