"""Entry point of the multiuser allocator, run by the qpy admin account.

Listens on ``multiuser_connection_address`` (127.0.0.1 unless configured) and a port that is
chosen on first start and then kept, because users hold copies of it.
"""

from __future__ import annotations

import argparse
import fcntl
import gc
import logging
import os
import signal
import sys
from pathlib import Path

from qpy import paths
from qpy.server import Server
from qpy.spawn import report_ready as report


def main() -> None:
    sys.setswitchinterval(0.0002)  # hand the GIL over fast: threads pass events along
    parser = argparse.ArgumentParser(prog="qpy-multiuser")
    parser.add_argument("--ready-fd", type=int, default=None)
    args = parser.parse_args()
    home = Path(paths.ensure_private_dir(paths.admin_home()))
    logging.basicConfig(filename=home / "multiuser.log", level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    lock = open(home / "multiuser.lock", "a")  # noqa: SIM115 - held for the process lifetime
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        report(args.ready_fd, "busy\n")
        sys.exit(1)
    try:
        server, mu = start(home)
    except Exception as exc:
        logging.exception("multiuser start-up failed")
        report(args.ready_fd, f"error {exc}\n")
        sys.exit(1)
    gc.freeze()  # nodes, users, keys live as long as the process: keep them out of GC passes
    signal.signal(signal.SIGTERM, lambda *_: server.stop())
    signal.signal(signal.SIGINT, lambda *_: server.stop())
    (home / "multiuser.pid").write_text(f"{os.getpid()}\n")
    report(args.ready_fd, "ok\n")
    logging.info("multiuser serving %s", server.address)
    server.wait()
    logging.info("multiuser stopping")
    if mu.monitor is not None:
        mu.monitor.stop()
    (home / "multiuser.pid").unlink(missing_ok=True)


def start(home):
    from qpy_multiuser.service import Multiuser

    mu = Multiuser(home)
    address_file = home / "multiuser_connection_address"
    host = address_file.read_text().strip() if address_file.exists() else "127.0.0.1"
    port_file = home / "multiuser_connection_port"
    port = int(port_file.read_text()) if port_file.exists() else 0
    server = Server((host or "127.0.0.1", port), mu.key_for, mu.table(), idle_timeout=None,
                    on_close=mu.closed)
    mu.address = host or "127.0.0.1"
    mu.stop = server.stop
    if not port_file.exists():
        paths.write_private(port_file, f"{server.address[1]}\n")
    server.start()
    mu.watch_nodes()
    return server, mu



if __name__ == "__main__":
    main()
