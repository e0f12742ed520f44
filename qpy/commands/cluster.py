"""Joining a cluster: ``qpy join CODE``."""

from __future__ import annotations

import click

from qpy.commands.common import CONTEXT, echo, fail
from qpy.invocation import current


@click.command(context_settings=CONTEXT)
@click.argument("code")
def join(code: str) -> None:
    """Fetch your key for the cluster with the enrolment code your qpy admin gave you."""
    current().local_only()  # the multiuser checks that this very account asks
    import os
    from multiprocessing import AuthenticationError

    from qpy import enrolment, paths, wire
    from qpy.client import ClientError

    try:
        host, port, secret = enrolment.parse(code)
    except enrolment.CodeError as exc:
        fail(str(exc))
    me = wire.whoami()
    where = f"the cluster's multiuser at {host}:{port}"
    try:
        conn = wire.connect((host, port), enrolment.claim(me), enrolment.join_key(me, secret))
    except (AuthenticationError, EOFError, ConnectionResetError, BrokenPipeError):
        raise ClientError(f"{where} refused the enrolment code: it is wrong, used, expired "
                          f"or not {me}'s; ask your qpy admin for a new one") from None
    except OSError as exc:
        raise ClientError(f"{where} is not reachable: {exc}", "unreachable") from None
    try:
        reply = wire.exchange(conn, {"type": "join"}, 30.0, where)
    except wire.Refused as exc:
        raise ClientError(f"{where} refused the enrolment code: {exc}", exc.code) from None
    home = paths.ensure_private_dir(paths.qpy_home())
    bundle = reply["bundle"]
    for name in paths.BUNDLE:
        paths.write_private(os.path.join(home, name), bundle[name].strip() + "\n")
    echo(f"Joined {where}: your key is in {home} (mode 0600).\n")
    _move_master()


def _move_master() -> None:
    """A running master goes on with the cluster (running jobs are kept); the personal
    multiuser stops if no master uses it any more."""
    from qpy import client, paths
    from qpy.commands.daemons import stop_master, stop_personal_multiuser

    if stop_master():
        client.start_master(paths.ensure_private_dir(paths.qpy_home()))
        echo("qpy-master started.\n")
    if stop_personal_multiuser():
        echo("Stopping the personal multiuser.\n")
