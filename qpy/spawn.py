"""Start a daemon in the background and wait exactly until it says it is ready.

The daemon gets /dev/null as stdin and its log as stdout/stderr, and a new session, so it
never holds the caller's terminal or pipes (``$(qpy sub ...)`` returns at once). It reports
readiness on an inherited pipe; the caller reads until that pipe closes, with no sleeps.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys


class SpawnError(RuntimeError):
    """The daemon did not come up; the text says why or where to look."""


def spawn_daemon(module: str, log_path: str | os.PathLike, env: dict[str, str] | None = None,
                 timeout: float = 60.0) -> str:
    """Run ``python -m module --ready-fd N`` detached; return its first status word."""
    r, w = os.pipe()
    try:
        with open(os.devnull, "rb") as devnull, open(log_path, "ab") as log:
            subprocess.Popen([sys.executable, "-m", module, "--ready-fd", str(w)],
                             stdin=devnull, stdout=log, stderr=log, env=env, pass_fds=(w,),
                             start_new_session=True, close_fds=True)
    finally:
        os.close(w)
    text = b""
    try:
        while True:
            ready, _, _ = select.select([r], [], [], timeout)
            if not ready:
                raise SpawnError(f"{module} did not report ready within {timeout:g} s; "
                                 f"see {log_path}")
            chunk = os.read(r, 4096)
            if not chunk:
                break
            text += chunk
    finally:
        os.close(r)
    status = text.decode(errors="replace").strip()
    if not status:
        raise SpawnError(f"{module} exited during start-up; see {log_path}")
    return status


def report_ready(fd: int | None, text: str) -> None:
    """Daemon side: tell the waiting starter how start-up went, then let go of its pipe."""
    if fd is None:
        return
    try:
        os.write(fd, text.encode())
        os.close(fd)
    except OSError:
        pass
