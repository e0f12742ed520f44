"""Entry point of the per-user master: one instance per user, serving the CLI on a socket.

Started in the background by the CLI (``qpy restart`` or any command that finds no master).
Its stdin/stdout/stderr are /dev/null and its log; it reports readiness on the file
descriptor given by ``--ready-fd`` so the CLI waits exactly as long as start-up takes
(``qpy.daemon``, shared with the multiuser).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from qpy import daemon, paths, wire
from qpy.admission import Limits
from qpy.server import Server


def main() -> None:
    daemon.run("master", paths.qpy_home(), "master.log", "master.lock", "master.pid", start)


def start(home: Path) -> tuple[Server, Callable[[], None]]:
    """Open the store, restore jobs, connect the multiuser link and listen for the CLI."""
    from qpy_master import command_server, embedded, handlers
    from qpy_master.master import Master

    user = wire.whoami()
    key = paths.load_or_create_key(home / "master.key")
    sock = home / "master.sock"
    sock.unlink(missing_ok=True)  # we hold the lock: any socket file left is stale
    master = Master(home, user, lambda: embedded.connect_multiuser(home, user))
    server_box: list[Server] = []
    table = handlers.make_table(master, lambda: server_box[0].stop())
    old_umask = os.umask(0o077)
    try:
        server = Server(str(sock), lambda u, peer: key if u == user else None, table,
                        limits=Limits(idle=120.0), same_uid_only=True)
    finally:
        os.umask(old_umask)
    server_box.append(server)
    server.start()
    command_server.preload()

    def shutdown() -> None:
        master.shutdown()
        sock.unlink(missing_ok=True)

    return server, shutdown


if __name__ == "__main__":
    main()
