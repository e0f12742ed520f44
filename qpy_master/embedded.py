"""Reaching the multiuser, and the embedded default when nothing is configured.

A user whose qpy home holds no multiuser connection files gets a personal multiuser whose
only node is this machine (its real cores and memory), set up under ``$QPY_HOME/embedded``
and started on demand. A real cluster differs only by the files the admin hands out.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from qpy import paths, wire
from qpy.client import connect_bundle
from qpy.spawn import spawn_daemon

BUNDLE = ("multiuser_connection_address", "multiuser_connection_port",
          "multiuser_connection_conn_key")


def embedded_home(home: Path) -> Path:
    return home / "embedded"


def set_up(home: Path, user: str) -> Path:
    """Write the embedded multiuser's files (once): this machine, this user, even rules."""
    admin = paths.ensure_private_dir(embedded_home(home))
    if not (admin / "nodes").exists():
        (admin / "nodes").write_text("# the embedded default: this machine only\nlocalhost\n")
        (admin / "allowed_users").write_text(f"{user}\n")
        (admin / "distribution_rules").write_text("even\n")
    paths.ensure_private_dir(admin / "keys")
    paths.load_or_create_key(admin / "keys" / user)
    return admin


def start_embedded(home: Path, user: str) -> None:
    """Start the personal multiuser unless another process already did, then hand out
    the user's bundle into the qpy home."""
    admin = set_up(home, user)
    with open(admin / "start.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            connect_bundle(admin, user, admin / "keys" / user).close()
        except (OSError, EOFError, ValueError):  # not running: start it
            env = {**os.environ, "QPY_ADMIN_HOME": str(admin)}
            status = spawn_daemon("qpy_multiuser", admin / "multiuser.log", env)
            if status not in ("ok", "busy"):
                raise ConnectionError(f"the embedded multiuser did not start: {status}") \
                    from None
    paths.write_private(home / BUNDLE[0], "127.0.0.1\n")
    paths.write_private(home / BUNDLE[1], (admin / BUNDLE[1]).read_text())
    paths.write_private(home / BUNDLE[2], (admin / "keys" / user).read_text())


def connect_multiuser(home: Path, user: str):
    """A persistent, authenticated connection to this user's multiuser."""
    configured = all((home / name).exists() for name in BUNDLE)
    embedded = embedded_home(home).exists() or not configured
    if configured:
        try:
            conn = connect_bundle(home, user, home / BUNDLE[2])
            wire.tune_socket(conn, None)
            return conn
        except (ConnectionRefusedError, FileNotFoundError):
            if not embedded:
                raise
    start_embedded(home, user)
    conn = connect_bundle(home, user, home / BUNDLE[2])
    wire.tune_socket(conn, None)
    return conn
