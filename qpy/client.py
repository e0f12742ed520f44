"""The CLI's side of the wire: find (or start) the user's master and make one request.

Kept light: only what a request needs is imported, because the CLI's start-up time is
what a user feels on every command.
"""

from __future__ import annotations

import fcntl
import os

from qpy import paths, wire
from qpy.errors import ClientError

CALL_TIMEOUT = 120.0


def connect_bundle(directory: str | os.PathLike, user: str, key_file: str | os.PathLike):
    """Connect to the multiuser named by the ``multiuser_connection_{address,port}`` files
    of ``directory`` (a user's qpy home or the admin home), proving ``key_file``'s key."""
    address_file = os.path.join(directory, "multiuser_connection_address")
    host = "127.0.0.1"
    if os.path.exists(address_file):
        with open(address_file) as f:
            host = f.read()
    with open(os.path.join(directory, "multiuser_connection_port")) as f:
        port = f.read()
    return wire.connect(wire.parse_address(host, port), user, paths.read_key(key_file))


def _connect(home: str):
    key = paths.load_or_create_key(os.path.join(home, "master.key"))
    return wire.connect(os.path.join(home, "master.sock"), wire.whoami(), key)


def start_master(home: str) -> None:
    """Start the master unless a concurrent command already did (a lock makes one win)."""
    from qpy.spawn import SpawnError, spawn_daemon

    with open(os.path.join(home, "start.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            _connect(home).close()
            return
        except (OSError, EOFError):
            pass
        try:
            status = spawn_daemon("qpy_master", os.path.join(home, "master.log"))
        except SpawnError as exc:
            raise ClientError(str(exc), "unreachable") from None
        if status not in ("ok", "busy"):
            raise ClientError(f"the qpy master could not start: {status}", "unreachable")


def connect(start: bool = True):
    """An authenticated connection to this user's master, starting it if needed."""
    home = paths.ensure_private_dir(paths.qpy_home())
    try:
        return _connect(home)
    except (FileNotFoundError, ConnectionRefusedError):
        if not start:
            raise
    except (ConnectionResetError, BrokenPipeError, EOFError) as exc:
        # the master died while it held our connection unserved: nothing was asked yet,
        # so start another (start_master first checks whether one answers by now)
        if not start:
            raise ClientError(f"cannot talk to the qpy master: {exc}", "unreachable") from None
    except OSError as exc:
        raise ClientError(f"cannot talk to the qpy master: {exc}", "unreachable") from None
    start_master(home)
    try:
        return _connect(home)
    except (OSError, EOFError) as exc:
        raise ClientError(f"the qpy master started but does not answer: {exc}",
                          "unreachable") from None


def request(msg: dict, start: bool = True) -> dict:
    """One request to the master; an error reply raises ClientError with its text."""
    try:
        return wire.exchange(connect(start), msg, CALL_TIMEOUT, "the qpy master")
    except wire.Refused as exc:
        raise ClientError(str(exc), exc.code) from None
