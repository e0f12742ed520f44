"""Reaching the multiuser: the cluster's, or the embedded default when there is none.

A user whose qpy home holds a cluster bundle (the three ``multiuser_connection_*`` files
the admin hands out, or ``qpy join`` fetched) is on the cluster, and stays there: when
that multiuser is down, the master waits for it, as the admin's manual promises. Only a
user with no bundle at all gets a personal multiuser whose only node is this machine (its
real cores and memory), set up under ``$QPY_HOME/embedded`` and started on demand. The
bundle files are the user's: qpy never writes them (``qpy join`` aside).

Older versions copied the personal multiuser's address and key into the bundle files; a
bundle whose key is the personal multiuser's key is that copy, not a cluster bundle.
"""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path

from qpy import names, paths, wire
from qpy.client import connect_bundle
from qpy.paths import BUNDLE
from qpy.spawn import spawn_daemon

OLD_NODES = "# the embedded default: this machine only\nlocalhost\n"


def embedded_home(home: Path) -> Path:
    return Path(paths.embedded_home(home))


def node_name() -> str:
    """The personal multiuser's node: this machine, named after the host (so that
    ``-a $(hostname)`` selects it and jobs see it in QPY_NODE)."""
    host = socket.gethostname()
    return host if names.is_node_name(host) else "localhost"


def node_line() -> str:
    """The node's line in the personal multiuser's ``nodes``: ``localhost`` is kept as
    an attribute, so ``-a localhost`` still selects it."""
    name = node_name()
    attrs = "" if name == "localhost" else " attributes=localhost"
    return f"{name} address=localhost{attrs}\n"


def set_up(home: Path, user: str) -> Path:
    """Write the embedded multiuser's files (once): this machine, this user, even rules."""
    admin = paths.ensure_private_dir(embedded_home(home))
    nodes = admin / "nodes"
    if not nodes.exists() or nodes.read_text() == OLD_NODES:
        nodes.write_text("# the embedded default: this machine only\n" + node_line())
    if not (admin / "allowed_users").exists():
        (admin / "allowed_users").write_text(f"{user}\n")
        (admin / "distribution_rules").write_text("even\n")
    paths.ensure_private_dir(admin / "keys")
    paths.load_or_create_key(admin / "keys" / user)
    return admin


def start_embedded(home: Path, user: str) -> None:
    """Start the personal multiuser unless another process already did."""
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


def on_cluster(home: Path, user: str) -> bool:
    """Whether a cluster bundle is installed: any of its files (a missing one is then an
    error to report, not a reason to run jobs on this machine instead)."""
    if not any((home / name).exists() for name in BUNDLE):
        return False
    return not _old_personal_copy(home, user)


def _old_personal_copy(home: Path, user: str) -> bool:
    mine = embedded_home(home) / "keys" / user
    try:
        return (home / BUNDLE[2]).read_text().strip() == mine.read_text().strip()
    except OSError:
        return False


def describe(home: Path, user: str) -> dict:
    """Which multiuser this user is on, for ``qpy status``."""
    if on_cluster(home, user):
        try:
            host = (home / BUNDLE[0]).read_text().strip() or "127.0.0.1"
            port = (home / BUNDLE[1]).read_text().strip()
        except OSError:
            host, port = "?", "?"
        return {"kind": "cluster", "address": f"{host}:{port}"}
    return {"kind": "personal", "address": str(embedded_home(home))}


def connect_multiuser(home: Path, user: str):
    """A persistent, authenticated connection to this user's multiuser: the cluster's
    (never replaced by a personal one), or the personal one when there is no bundle."""
    if on_cluster(home, user):
        missing = [name for name in BUNDLE if not (home / name).exists()]
        if missing:
            raise FileNotFoundError(f"the cluster bundle in {home} lacks {', '.join(missing)}")
        conn = connect_bundle(home, user, home / BUNDLE[2])
    else:
        start_embedded(home, user)
        admin = embedded_home(home)
        conn = connect_bundle(admin, user, admin / "keys" / user)
    wire.tune_socket(conn, None)
    return conn
