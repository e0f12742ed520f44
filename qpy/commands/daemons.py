"""The daemons behind qpy: status, restart, finish (and what ``qpy join`` uses of them)."""

from __future__ import annotations

import click

from qpy.commands.common import CONTEXT, echo, request, say
from qpy.invocation import current


@click.command(context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def status(as_json: bool) -> None:
    """Show users, nodes and cores of the multiuser."""
    reply = request({"type": "status"})
    allocator = reply.get("allocator") or {}
    if as_json:
        from qpy import jsonout

        echo(jsonout.document(users=reply["users"],
                              nodes=[jsonout.node(n) for n in reply["nodes"]],
                              allocator=allocator, sessions=reply.get("sessions") or []))
        return
    from qpy import status_view

    if allocator.get("kind") == "cluster":
        echo(f"Allocator: the cluster's multiuser at {allocator['address']}\n")
    elif allocator:
        echo("Allocator: your personal multiuser (this machine only; no cluster bundle "
             "in your qpy home)\n")
    echo(status_view.render(reply["users"], reply["nodes"], reply.get("sessions")))


def stop_master() -> bool:
    """Ask a running master to stop and wait until its lock is free; False if none ran."""
    import fcntl
    import os

    from qpy import paths

    try:
        say(request({"type": "finish"}, start=False))
    except (FileNotFoundError, ConnectionRefusedError):
        return False
    with open(os.path.join(paths.qpy_home(), "master.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the old master has exited
    return True


@click.command(context_settings=CONTEXT)
def restart() -> None:
    """Stop the master if it runs and start a new one; running jobs are kept."""
    current().local_only()
    stop_master()
    from qpy import client, paths

    client.start_master(paths.ensure_private_dir(paths.qpy_home()))
    echo("qpy-master started.\n")


def stop_personal_multiuser() -> bool:
    """Stop the user's personal multiuser (the embedded default) if it runs and no master
    uses it any more; whether it was stopped. The master that just stopped may not have
    been seen leaving yet, so a refusal for that reason is asked again for a moment."""
    import os
    import time

    from qpy import paths, wire
    from qpy.client import connect_bundle

    admin = paths.embedded_home(paths.qpy_home())
    if not os.path.exists(os.path.join(admin, "multiuser.pid")):
        return False
    deadline = time.monotonic() + 3.0
    while True:
        try:
            conn = connect_bundle(admin, "@admin", os.path.join(admin, "admin.key"))
            wire.exchange(conn, {"type": "admin", "command": "finish", "args": ["unused"]},
                          30.0, "the personal multiuser")
            return True
        except (OSError, EOFError, ValueError):
            return False  # not running
        except wire.Refused:
            if time.monotonic() > deadline:
                return False  # a master uses it
            time.sleep(0.1)


@click.command(context_settings=CONTEXT)
def finish() -> None:
    """Stop the master, and the personal multiuser if no master uses it; running jobs
    go on and are found again at the next start."""
    current().local_only()
    if not stop_master():
        echo("qpy-master is not running.\n")
    if stop_personal_multiuser():
        echo("Stopping the personal multiuser.\n")
