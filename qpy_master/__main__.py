"""Entry point of the per-user master: one instance per user, serving the CLI on a socket.

Started in the background by the CLI (``qpy restart`` or any command that finds no master).
Its stdin/stdout/stderr are /dev/null and its log; it reports readiness on the file
descriptor given by ``--ready-fd`` so the CLI waits exactly as long as start-up takes.
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

from qpy import paths, wire
from qpy.server import Server
from qpy.spawn import report_ready as report


def setup_logging(home) -> None:
    logging.basicConfig(filename=home / "master.log", level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def main() -> None:
    sys.setswitchinterval(0.0002)  # hand the GIL over fast: threads pass events along
    parser = argparse.ArgumentParser(prog="qpy-master")
    parser.add_argument("--ready-fd", type=int, default=None)
    args = parser.parse_args()
    home = Path(paths.ensure_private_dir(paths.qpy_home()))
    setup_logging(home)
    lock = open(home / "master.lock", "a")  # noqa: SIM115 - held for the process lifetime
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        report(args.ready_fd, "busy\n")
        sys.exit(1)
    try:
        server, master = start(home)
    except Exception as exc:
        logging.exception("master start-up failed")
        report(args.ready_fd, f"error {type(exc).__name__}: {exc}\n")
        sys.exit(1)
    gc.freeze()  # the restored jobs live long: keep them out of collection passes
    signal.signal(signal.SIGTERM, lambda *_: server.stop())
    signal.signal(signal.SIGINT, lambda *_: server.stop())
    (home / "master.pid").write_text(f"{os.getpid()}\n")
    report(args.ready_fd, "ok\n")
    logging.info("master %d serving %s", os.getpid(), server.address)
    server.wait()
    logging.info("master stopping")
    master.shutdown()
    (home / "master.sock").unlink(missing_ok=True)
    (home / "master.pid").unlink(missing_ok=True)


def start(home):
    """Open the store, restore jobs, connect the multiuser link and listen for the CLI."""
    from qpy_master import embedded, handlers
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
        server = Server(str(sock), lambda u: key if u == user else None, table,
                        idle_timeout=120.0, same_uid_only=True)
    finally:
        os.umask(old_umask)
    server_box.append(server)
    server.start()
    return server, master


if __name__ == "__main__":
    main()
