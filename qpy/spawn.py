"""Start a daemon in the background and wait exactly until it says it is ready.

The daemon gets /dev/null as stdin and its log as stdout/stderr, and a new session, so it
never holds the caller's terminal or pipes (``$(qpy sub ...)`` returns at once). It reports
readiness on an inherited pipe; the caller reads until that pipe closes, with no sleeps.

The daemon imports only from its installation, whatever the caller's directory and
environment: it runs in isolated mode (``python -I``: neither the current directory nor
PYTHONPATH nor the user's site-packages is on ``sys.path``, no ``PYTHON*`` variable is
read) from ``/``. Else ``qpy sub`` typed in a shared directory holding a ``qpy_master``
package would run that package's code as the user.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys

HOMES = ("QPY_HOME", "QPY_ADMIN_HOME")


class SpawnError(RuntimeError):
    """The daemon did not come up; the text says why or where to look."""


def spawn_daemon(module: str, log_path: str | os.PathLike, env: dict[str, str] | None = None,
                 timeout: float = 60.0) -> str:
    """Run ``python -I -m module --ready-fd N`` detached in ``/``; return its first status
    word."""
    env = dict(os.environ if env is None else env)
    for name in HOMES:  # named relative to the caller's directory, not to /
        if env.get(name):
            env[name] = os.path.abspath(env[name])
    r, w = os.pipe()
    try:
        with open(os.devnull, "rb") as devnull, open(log_path, "ab") as log:
            subprocess.Popen([sys.executable, "-I", "-m", module, "--ready-fd", str(w)],
                             stdin=devnull, stdout=log, stderr=log, env=env, pass_fds=(w,),
                             cwd="/", start_new_session=True, close_fds=True)
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
