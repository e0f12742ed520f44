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
        self._pending: dict[int, Callable[[dict | None], None]] = {}
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
        return self._wait(self._current(), msg, timeout)

    def _wait(self, conn, msg: dict, timeout: float) -> dict:
        done = threading.Event()
        box: list[dict | None] = [None]

        def answered(reply: dict | None) -> None:
            box[0] = reply
            done.set()

        msg_id = self._send(conn, msg, answered)
        if not done.wait(timeout):
            with self._lock:
                self._pending.pop(msg_id, None)
        if box[0] is None:
            raise LinkDown(f"no reply from the multiuser to {msg['type']}")
        return box[0]

    def send(self, msg: dict, on_reply: Callable[[dict | None], None]) -> int:
        """Send a request; ``on_reply`` gets its reply in the link's reader thread (None if
        the link goes down first), so no thread waits on the way. LinkDown when the link
        is down now (``on_reply`` is then never called)."""
        return self._send(self._current(), msg, on_reply)

    def _current(self):
        conn = self._conn
        if conn is None or not self._up.is_set():
            raise LinkDown("the multiuser is not connected")
        return conn

    def _send(self, conn, msg: dict, on_reply: Callable[[dict | None], None]) -> int:
        msg_id = next(self._ids)
        with self._lock:
            self._pending[msg_id] = on_reply
        try:
            conn.send_bytes(wire.encode({**msg, "id": msg_id}))
        except (OSError, ValueError):
            with self._lock:
                self._pending.pop(msg_id, None)
            raise LinkDown("the multiuser connection broke") from None
        return msg_id

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
            reply = self._wait(conn, self._hello(), 30.0)
            if not reply.get("ok"):
                log.error("the multiuser refused this master: %s", reply.get("error"))
                conn.close()
                self._closed.wait(5.0)
            else:
                self._on_hello(reply)
                self._up.set()
                log.info("registered with the multiuser")
                self._on_event({"type": "wake"})  # requests may be sent from now on
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
                    on_reply = self._pending.pop(re, None)
                if on_reply is not None:
                    on_reply(msg)
        except (OSError, EOFError, wire.WireError) as exc:
            if not self._closed.is_set():
                log.warning("multiuser connection lost: %s", exc)
        finally:
            self._up.clear()
            conn.close()
            with self._lock:
                waiting, self._pending = list(self._pending.values()), {}
            for on_reply in waiting:
                on_reply(None)
