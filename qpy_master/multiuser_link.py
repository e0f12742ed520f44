"""The master's one persistent, authenticated connection to the multiuser.

Requests carry an ``id`` and wait for the reply with that ``re``; frames without ``re`` are
events the multiuser pushes (``wake`` when cores free up, ``nodes`` when the cluster
changes, ``bye`` when the admin removed this user). On every (re)connection the master
registers with ``hello`` and its running jobs, which is how the multiuser's allocations
are reconciled with reality.

A multiuser that refuses this user (the admin removed them, or it does not know their
key) is a ``refusal``: the link keeps trying, so access comes back by itself, and the
master refuses new jobs with that reason meanwhile.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable
from multiprocessing import AuthenticationError

from qpy import wire
from qpy.server import shut

log = logging.getLogger("qpy.master.link")
REFUSED_RETRY = 10.0  # seconds between attempts while the multiuser refuses this user
RECONNECT_WAIT = 3.0  # how long a request waits for a link that is reconnecting
KEY_REFUSED = ("the cluster's multiuser does not accept your key "
               "(multiuser_connection_conn_key): ask your qpy admin for a new one")


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
        self._settled = threading.Event()  # registered or refused: the answer is known
        self._closed = threading.Event()
        self._retry = threading.Event()  # cuts the back-off short: someone is waiting
        self.refusal: str | None = None  # why the multiuser refuses this user, if it does
        threading.Thread(target=self._run, name="multiuser-link", daemon=True).start()

    @property
    def up(self) -> bool:
        return self._up.is_set()

    def wait_up(self, timeout: float) -> bool:
        return self._up.wait(timeout)

    def wait_settled(self, timeout: float) -> bool:
        """Wait until the multiuser has registered or refused this master."""
        return self._settled.wait(timeout)

    def _refused(self, why: str) -> None:
        if why != self.refusal:
            log.error("the multiuser refuses this user: %s", why)
        self.refusal = why
        self._settled.set()

    def request(self, msg: dict, timeout: float = 30.0) -> dict:
        """Send a request and wait for its reply; raises LinkDown when disconnected.

        A link that is down but not refused is retried at once and given a moment: a
        user's ``qpy status`` just after the admin restarted the multiuser should find it,
        not the back-off of a master that lost it a while ago."""
        if not self._up.is_set() and self.refusal is None and not self._closed.is_set():
            self._retry.set()
            self._up.wait(RECONNECT_WAIT)
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

    def request_async(self, msg: dict, on_reply: Callable[[dict | None], None]) -> int:
        """Send a request (JSON, as ``request``); ``on_reply`` gets its reply in the
        link's reader thread (None if the link goes down first), so no thread waits on
        the way. LinkDown when the link is down now (``on_reply`` is then never called)."""
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
        self._retry.set()
        conn = self._conn
        if conn is not None:
            shut(conn)

    def _run(self) -> None:
        delay = 0.05
        while not self._closed.is_set():
            try:
                conn = self._connect()
            except AuthenticationError:
                self._refused(KEY_REFUSED)
                self._closed.wait(REFUSED_RETRY)
                continue
            except Exception as exc:
                log.warning("cannot reach the multiuser: %s", exc)
                if self._retry.wait(delay):
                    self._retry.clear()
                    delay = 0.05
                else:
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
                if reply.get("code") == "denied":
                    self._refused(str(reply.get("error")))
                else:
                    log.error("the multiuser refused this master: %s", reply.get("error"))
                shut(conn)
                self._closed.wait(REFUSED_RETRY)
            else:
                self.refusal = None
                self._on_hello(reply)
                self._up.set()
                self._settled.set()
                log.info("registered with the multiuser")
                self._on_event({"type": "wake"})  # requests may be sent from now on
        except LinkDown as exc:
            log.warning("registration failed: %s", exc)
            shut(conn)
        reader.join()
        self._up.clear()
        self._conn = None

    def _read(self, conn) -> None:
        try:
            while True:
                msg = wire.decode(conn.recv_bytes(wire.MAX_MESSAGE))
                re = msg.get("re")
                if re is None and msg.get("type") == "bye":
                    self._refused(str(msg.get("reason") or "the multiuser ended this link"))
                    break
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
            conn.close()  # only here: the reader is the one thread still using it
            with self._lock:
                waiting, self._pending = list(self._pending.values()), {}
            for on_reply in waiting:
                on_reply(None)

