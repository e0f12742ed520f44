"""The master's one persistent, authenticated connection to the multiuser.

Requests carry an ``id`` and wait for the reply with that ``re``; frames without ``re`` are
events the multiuser pushes (``wake`` when cores free up, ``nodes`` when the cluster
changes). On every (re)connection the master registers with ``hello`` and its running jobs,
which is how the multiuser's allocations are reconciled with reality.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable

from qpy import wire
from qpy.server import Unreachable

log = logging.getLogger("qpy.master.link")


class LinkDown(Exception):
    """The multiuser cannot be reached right now."""


class MultiuserLink:
    """Connect, register, and keep reconnecting until ``close``."""

    def __init__(self, connect: Callable[[], object], hello: Callable[[], dict],
                 on_hello: Callable[[dict], None], on_event: Callable[[dict], None]) -> None:
        self._connect = connect
        self._hello = hello
        self._on_hello = on_hello
        self._on_event = on_event
        self._conn = None
        self._ids = itertools.count(1)
        self._pending: dict[int, list] = {}
        self._lock = threading.Lock()
        self._up = threading.Event()
        self._closed = threading.Event()
        threading.Thread(target=self._run, name="multiuser-link", daemon=True).start()

    @property
    def up(self) -> bool:
        return self._up.is_set()

    def wait_up(self, timeout: float) -> bool:
        return self._up.wait(timeout)

    def request(self, msg: dict, timeout: float = 30.0) -> dict:
        """Send a request and wait for its reply; raises LinkDown when disconnected."""
        conn = self._conn
        if conn is None or not self._up.is_set():
            raise LinkDown("the multiuser is not connected")
        return self._exchange(conn, msg, timeout)

    def _exchange(self, conn, msg: dict, timeout: float) -> dict:
        slot: list = [threading.Event(), None]
        msg_id = next(self._ids)
        with self._lock:
            self._pending[msg_id] = slot
        try:
            try:
                conn.send_bytes(wire.encode({**msg, "id": msg_id}))
            except (OSError, ValueError):
                raise LinkDown("the multiuser connection broke") from None
            if not slot[0].wait(timeout) or slot[1] is None:
                raise LinkDown(f"no reply from the multiuser to {msg['type']}")
            return slot[1]
        finally:
            with self._lock:
                self._pending.pop(msg_id, None)

    def close(self) -> None:
        self._closed.set()
        conn = self._conn
        if conn is not None:
            conn.close()

    def _run(self) -> None:
        delay = 0.05
        while not self._closed.is_set():
            try:
                conn = self._connect()
            except Exception as exc:
                log.warning("cannot reach the multiuser: %s", exc)
                self._closed.wait(delay)
                delay = min(delay * 2, 5.0)
                continue
            delay = 0.05
            self._serve(conn)

    def _serve(self, conn) -> None:
        self._conn = conn
        reader = threading.Thread(target=self._read, args=(conn,), daemon=True)
        reader.start()
        try:
            reply = self._exchange(conn, self._hello(), 30.0)
            if not reply.get("ok"):
                log.error("the multiuser refused this master: %s", reply.get("error"))
                conn.close()
                self._closed.wait(5.0)
            else:
                self._on_hello(reply)
                self._up.set()
                log.info("registered with the multiuser")
        except LinkDown as exc:
            log.warning("registration failed: %s", exc)
            conn.close()
        reader.join()
        self._up.clear()
        self._conn = None

    def _read(self, conn) -> None:
        try:
            while True:
                msg = wire.decode(conn.recv_bytes(wire.MAX_MESSAGE))
                re = msg.get("re")
                if re is None:
                    self._on_event(msg)
                    continue
                with self._lock:
                    slot = self._pending.get(re)
                if slot is not None:
                    slot[1] = msg
                    slot[0].set()
        except (OSError, EOFError, wire.WireError) as exc:
            if not self._closed.is_set():
                log.warning("multiuser connection lost: %s", exc)
        finally:
            self._up.clear()
            conn.close()
            with self._lock:
                for slot in self._pending.values():
                    slot[0].set()

    def status(self) -> dict:
        """The multiuser's status as it answers; Unreachable when it cannot."""
        self.wait_up(10.0)  # a fresh master may still be connecting
        try:
            reply = self.request({"type": "status"}, timeout=10.0)
        except LinkDown as exc:
            raise Unreachable(f"the multiuser is not reachable: {exc}") from None
        if not reply.get("ok"):
            raise Unreachable(reply.get("error") or "the multiuser refused the status request")
        return reply
