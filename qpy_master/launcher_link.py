"""The master's link to one node's launcher process (``LauncherLink``).

The launcher is stdlib only. It is started as ``python3 -I -S -u -c BOOT RUN_DIR`` with its
source (and those of ``qpy/limits.py`` and ``qpy/cgroups.py``) sent down its stdin
first: on this machine as a child of the master, on a remote node at the end of an ssh
session (``ssh NODE python3 ...``), so the node needs python3 and nothing of qpy.
Either way ops go down its stdin as JSON lines and a reader thread hands each event line
to the master.

Connecting can take seconds (or fail after ``ConnectTimeout``), so it never happens under
the master's lock: ops posted before the launcher says ``ready`` wait in order in a
pending list. When the process ends, the master hears whether it was ever ready and, if
not, which jobs' start ops never left this machine.
"""

from __future__ import annotations

import collections
import json
import logging
import subprocess
import threading
import time
from collections.abc import Callable

from qpy import ssh, trace
from qpy_master.launcher import EVENTS

log = logging.getLogger("qpy.master.launcher_link")
READY_TIMEOUT = ssh.CONNECT_TIMEOUT + 30.0  # seconds from starting ssh to ``ready``


def _event(line: bytes) -> dict | None:
    """A launcher event that fits ``launcher.EVENTS``, or None."""
    try:
        event = json.loads(line)
    except ValueError:
        return None
    if not isinstance(event, dict) or event.get("ev") not in EVENTS:
        return None
    return event if all(f in event for f in EVENTS[event["ev"]]) else None


def _is_ready(line: bytes) -> bool:
    event = _event(line)
    return event is not None and event["ev"] == "ready"


class LauncherGone(Exception):
    """The launcher process is not there to take an op."""


class LauncherLink:
    """One launcher process, local or over ssh, and the threads that read from it."""

    def __init__(self, node: str, argv: list[str], preamble: bytes,
                 on_event: Callable[[str, dict], None],
                 on_ready: Callable[[str, LauncherLink], None],
                 on_exit: Callable[[str, LauncherLink], None], remote: bool = False) -> None:
        self.node = node
        self.on_event, self.on_ready, self.on_exit = on_event, on_ready, on_exit
        self.closing = False
        self.ready = False
        self.ready_at: float | None = None
        self.unsent_starts: set[int] = set()  # start ops still waiting in ``pending``
        self.pending: list[bytes] = []
        self.errors: collections.deque[str] = collections.deque(maxlen=20)
        self._lock = threading.Lock()
        try:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE if remote else None, close_fds=True)
        except OSError as exc:
            raise LauncherGone(f"cannot start the launcher for {node}: {exc}") from None
        threading.Thread(target=self._read, args=(preamble,), name=f"launcher-{node}",
                         daemon=True).start()
        if remote:
            threading.Thread(target=self._read_errors, name=f"ssh-{node}", daemon=True).start()

    @property
    def reason(self) -> str:
        """Why the launcher is gone, from ssh's or the launcher's last error line."""
        code = self.proc.poll()
        return ssh.last_error(self.errors, f"the launcher exited with status {code}"
                              if code is not None else "unknown")

    def post(self, op: dict) -> None:
        """Send one op, or keep it until the launcher is ready; raises LauncherGone if the
        process has ended."""
        line = (json.dumps(op, separators=(",", ":")) + "\n").encode()
        with self._lock:
            if not self.ready and self.proc.poll() is not None:  # (no waitpid once ready)
                raise LauncherGone(f"the launcher for {self.node} is gone: {self.reason}")
            if not self.ready:
                self.pending.append(line)
                if op.get("op") == "start":
                    self.unsent_starts.add(op["job"])
                return
            self._write(line)

    def _write(self, data: bytes) -> None:
        try:
            self.proc.stdin.write(data)
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
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def _handshake(self, preamble: bytes) -> bool:
        """Send the launcher's source down its stdin (local or remote alike), wait for
        ``ready``, then flush what waits. Lines a login script prints first are
        skipped; a launcher that never gets ready
        (a hung home directory, a shell waiting for input) is ended after a while, so its
        jobs go back to the queue."""
        timer = threading.Timer(READY_TIMEOUT, self._give_up)
        timer.daemon = True
        timer.start()
        try:
            self.proc.stdin.write(preamble)
            self.proc.stdin.flush()
            for line in self.proc.stdout:
                if _is_ready(line):
                    break
                self.errors.append(line.decode(errors="replace")[:300])
            else:
                return False
        except (OSError, ValueError):
            return False
        finally:
            timer.cancel()
        with self._lock:
            pending, self.pending = self.pending, []
            try:
                self._write(b"".join(pending))
            except LauncherGone:
                return False
            self.ready, self.ready_at = True, time.monotonic()
            self.unsent_starts.clear()
        self.on_ready(self.node, self)
        return True

    def _give_up(self) -> None:
        if not self.ready and self.proc.poll() is None:
            self.errors.append(f"the launcher was not ready after {READY_TIMEOUT:g} s")
            self.proc.kill()

    def _read(self, preamble: bytes) -> None:
        if self._handshake(preamble):
            for line in self.proc.stdout:
                trace.mark("master: launcher event")
                event = _event(line)
                if event is None:
                    log.error("launcher %s sent garbage: %r", self.node, line[:200])
                    continue
                try:
                    self.on_event(self.node, event)
                except Exception:
                    log.exception("handling launcher event %s failed", event)
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        self.proc.wait()
        if not self.closing:
            log.error("launcher for %s ended (%s)", self.node, self.reason)
            self.on_exit(self.node, self)

    def _read_errors(self) -> None:
        for raw in self.proc.stderr:
            line = raw.decode(errors="replace").rstrip()
            self.errors.append(line)
            log.warning("ssh %s: %s", self.node, line)
