"""Entry point of the multiuser allocator, run by the qpy admin account.

Listens on ``multiuser_connection_address`` (127.0.0.1 unless configured) and a port that is
chosen on first start and then kept, because users hold copies of it. Start-up, the ready
report and shutdown are ``qpy.daemon``'s, shared with the per-user master.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from qpy import daemon, paths
from qpy.admission import Limits
from qpy.server import Server

# What one peer may hold (see qpy.admission): a user's master needs one connection, qpy
# join another; the admin's commands come from the multiuser's own account. A session
# that is not a master's link (a command) has IDLE seconds for each request.
IDLE = 20.0
LIMITS = Limits(max_clients=512, reserve=64, pending_per_uid=8, pending_own_uid=32,
                pending_per_host=64, per_user=16, idle=IDLE)


def main() -> None:
    daemon.run("multiuser", paths.admin_home(), "multiuser.log", "multiuser.lock",
               "multiuser.pid", start)


def start(home: Path) -> tuple[Server, Callable[[], None]]:
    """Load the admin's files and the ledger, listen for masters and the admin, and start
    watching the nodes."""
    from qpy_multiuser import handlers
    from qpy_multiuser.state import Multiuser

    mu = Multiuser(home)
    address_file = home / "multiuser_connection_address"
    host = address_file.read_text().strip() if address_file.exists() else "127.0.0.1"
    port_file = home / "multiuser_connection_port"
    port = int(port_file.read_text()) if port_file.exists() else 0
    server = Server((host or "127.0.0.1", port), mu.key_for, handlers.make_table(mu),
                    limits=LIMITS, on_close=mu.closed)
    mu.address = host or "127.0.0.1"
    mu.stop = server.stop
    mu.sessions_of = server.sessions_of
    if not port_file.exists():
        paths.write_private(port_file, f"{server.address[1]}\n")
    server.start()
    mu.watch_nodes()
    return server, mu.shutdown


if __name__ == "__main__":
    main()
