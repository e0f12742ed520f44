"""The daemons behind qpy: status, restart, finish."""

from __future__ import annotations

import click

from qpy.commands.common import CONTEXT, echo, request, say
from qpy.invocation import current


@click.command(context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def status(as_json: bool) -> None:
    """Show users, nodes and cores of the multiuser."""
    reply = request({"type": "status"})
    if as_json:
        import json

        echo(json.dumps({"users": reply["users"], "nodes": reply["nodes"],
                         "sessions": reply.get("sessions") or []}, indent=1) + "\n")
        return
    from qpy import status_view

    echo(status_view.render(reply["users"], reply["nodes"], reply.get("sessions")))


def _stop_master() -> bool:
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
    _stop_master()
    from qpy import client, paths

    client.start_master(paths.ensure_private_dir(paths.qpy_home()))
    echo("qpy-master started.\n")


@click.command(context_settings=CONTEXT)
def finish() -> None:
    """Stop the master; running jobs go on and are found again at the next start."""
    current().local_only()
    if not _stop_master():
        echo("qpy-master is not running.\n")
