"""The master's handle on one node's launcher process.

The launcher runs as a child of the master (``python3 -S launcher.py``), stdlib only, so it
starts in milliseconds and could run unchanged on a node over ssh. Ops go down its stdin as
JSON lines; a reader thread hands each event line to the master. If the launcher dies, the
master starts a new one and re-adopts the node's running jobs.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from qpy_master import launcher as launcher_module

log = logging.getLogger("qpy.master.runner")
LAUNCHER = Path(launcher_module.__file__)


class LauncherGone(Exception):
    """The launcher process is not there to take an op."""


class Runner:
    """One launcher process and the thread that reads its events."""

    def __init__(self, node: str, run_dir: Path, on_event: Callable[[str, dict], None],
                 on_exit: Callable[[str, Runner], None]) -> None:
        self.node = node
        self.on_event = on_event
        self.on_exit = on_exit
        self.closing = False
        self.envs_sent: set[int] = set()
        self._lock = threading.Lock()
        self.proc = subprocess.Popen(
            [sys.executable, "-S", "-u", str(LAUNCHER), str(run_dir)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None, close_fds=True)
        ready = self.proc.stdout.readline()
        if not ready:
            raise LauncherGone(f"the launcher for {node} did not start")
        threading.Thread(target=self._read, name=f"launcher-{node}", daemon=True).start()

    def post(self, op: dict) -> None:
        """Send one op; raises LauncherGone if the process has died."""
        line = (json.dumps(op, separators=(",", ":")) + "\n").encode()
        with self._lock:
            try:
                self.proc.stdin.write(line)
                self.proc.stdin.flush()
            except (OSError, ValueError):
                raise LauncherGone(f"the launcher for {self.node} is gone") from None

    def close(self) -> None:
        """End the launcher; the jobs' supervisors keep running without it."""
        self.closing = True
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        self.proc.wait()

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                log.error("launcher %s sent garbage: %r", self.node, line[:200])
                continue
            try:
                self.on_event(self.node, event)
            except Exception:
                log.exception("handling launcher event %s failed", event)
        self.proc.wait()
        if not self.closing:
            log.error("launcher for %s exited with %s", self.node, self.proc.returncode)
            self.on_exit(self.node, self)
