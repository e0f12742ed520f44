"""The job-ID fast path of bash completion: ``qpy _complete ids [STATUS...]``.

``bash_completion.sh`` (written by ``python -m tools.completion``) asks this hidden
command for the user's job IDs. It only talks to a master that already runs, gives up
after a short time and never prints an error: completion must stay quick and quiet. It
imports nothing from the CLI or the tiers, so that the CLI can load it lazily.
"""

from __future__ import annotations

import os
import sys

ID_TIMEOUT = 1.5  # seconds for each of connect and reply when asking for job IDs
ID_DEADLINE = 3  # whole seconds after which the ID lookup exits, whatever it waits for


def job_ids(statuses: tuple[str, ...] = ()) -> list[int]:
    """The IDs of this user's jobs with one of ``statuses`` (all jobs when empty).

    Only a running master is asked: nothing is started and no file or directory is
    created. Any problem means no IDs.
    """
    from qpy import paths, selection, wire

    home = paths.qpy_home()
    sock, key_file = os.path.join(home, "master.sock"), os.path.join(home, "master.key")
    if not (os.path.exists(sock) and os.path.exists(key_file)):
        return []
    wanted = [s for s in selection.STATUSES if s in statuses]
    if statuses and not wanted:
        return []
    conn = wire.connect(sock, wire.whoami(), paths.read_key(key_file), timeout=ID_TIMEOUT)
    try:
        reply = wire.call(conn, {"type": "check", "select": {"statuses": wanted}},
                          ID_TIMEOUT)
    finally:
        conn.close()
    if not reply.get("ok"):
        return []
    return sorted({job["id"] for job in reply.get("jobs", ())})


def print_candidates(what: str, args: tuple[str, ...]) -> None:
    """``qpy _complete WHAT ARGS``: candidates one a line on stdout; never an error."""
    import signal

    signal.signal(signal.SIGALRM, lambda *_: os._exit(1))
    signal.alarm(ID_DEADLINE)
    try:
        found = job_ids(args) if what == "ids" else []
    except Exception:  # completion stays silent: no IDs is the answer to every problem
        found = []
    sys.stdout.write("".join(f"{i}\n" for i in found))
