"""The job-ID fast path of bash completion: ``qpy _complete ids [STATUS...]``.

``bash_completion.sh`` (written by ``python -m tools.completion``) asks this hidden
command for the user's job IDs. It only talks to a master that already runs, gives up
after a short time and never prints an error: completion must stay quick and quiet. It
imports nothing from the CLI or the tiers, so that the CLI can load it lazily.
"""

from __future__ import annotations

import os
from collections.abc import Callable

ID_TIMEOUT = 1.5  # seconds for each of connect and reply when asking for job IDs
ID_DEADLINE = 3  # whole seconds after which the ID lookup exits, whatever it waits for


def _ask_running_master(msg: dict) -> dict:
    """One request to a master that already runs, with short timeouts; nothing is
    started and no file or directory is created."""
    from qpy import paths, wire

    home = paths.qpy_home()
    sock, key_file = os.path.join(home, "master.sock"), os.path.join(home, "master.key")
    if not (os.path.exists(sock) and os.path.exists(key_file)):
        return {}
    conn = wire.connect(sock, wire.whoami(), paths.read_key(key_file), timeout=ID_TIMEOUT)
    try:
        return wire.call(conn, msg, ID_TIMEOUT)
    finally:
        conn.close()


def job_ids(statuses: tuple[str, ...] = (), ask: Callable[[dict], dict] | None = None
            ) -> list[int]:
    """The IDs of this user's jobs with one of ``statuses`` (all jobs when empty), from
    ``ask`` (the master itself when the command server runs this) or a running master.
    Any problem means no IDs."""
    from qpy.states import STATUSES

    wanted = [s for s in STATUSES if s in statuses]
    if statuses and not wanted:
        return []
    reply = (ask or _ask_running_master)({"type": "check", "select": {"statuses": wanted}})
    if not reply.get("ok", True):
        return []
    return sorted({job["id"] for job in reply.get("jobs", ())})


def candidates(what: str, args: tuple[str, ...],
               ask: Callable[[dict], dict] | None = None) -> str:
    """``qpy _complete WHAT ARGS``: candidates one a line; never an error. Outside the
    master the lookup has a deadline, so completion never hangs the shell."""
    if ask is None:
        import signal

        signal.signal(signal.SIGALRM, lambda *_: os._exit(1))
        signal.alarm(ID_DEADLINE)
    try:
        found = job_ids(args, ask) if what == "ids" else []
    except Exception:  # completion stays silent: no IDs is the answer to every problem
        found = []
    return "".join(f"{i}\n" for i in found)
