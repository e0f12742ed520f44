"""The request server both daemons share.

One thread per connection, so a slow or silent client blocks only itself; handshakes and
reads time out; every malformed or failing request gets an error reply and the daemon goes
on serving. Handlers are looked up in an explicit table, never by attribute name.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection, Listener

from qpy import peers, wire
from qpy.admission import Admission, Deadlines, Limits, Watch
from qpy.peers import Peer

log = logging.getLogger("qpy.server")
# The tests set this: every reply is checked against wire.REPLIES before it is sent.
CHECK_REPLIES = bool(os.environ.get("QPY_CHECK_REPLIES"))
DEFAULT_LIMITS = Limits()
SEND_TIMEOUT = 10.0  # a peer that reads nothing must not hold the thread sending to it


def _checked(kind: str, reply: dict) -> dict:
    """The reply, or an internal error naming how it strays from its schema."""
    problem = wire.reply_problem(kind, reply)
    if problem is None:
        return reply
    log.error("reply to %s does not fit its schema: %s", kind, problem)
    return wire.error_reply(f"internal error: {problem}", reply.get("re"), "internal")


class RequestError(Exception):
    """A request that cannot be done; the text goes to the user, ``code`` (a key of
    ``wire.EXIT_STATUS``) says what kind of failure it is; ``after`` runs once the error
    reply is sent (to end a session that may do nothing more)."""

    code = "refused"

    def __init__(self, text: str, after: Callable[[], None] | None = None) -> None:
        super().__init__(text)
        self.after = after


class BadRequest(RequestError):
    """Input that is not valid: an option, value or selection the user must fix."""

    code = "bad_request"


class NotFound(RequestError):
    """The selection or job ID matched no job."""

    code = "not_found"


class Unreachable(RequestError):
    """A daemon this one needs (the multiuser) cannot be reached now."""

    code = "unreachable"


class Denied(RequestError):
    """Not allowed for the user who asks."""

    code = "denied"


class Session:
    """One authenticated connection: who it is, and a lock so events and replies don't mix.
    ``persistent`` marks a master's link, which waits as long as it likes between
    requests; every other session must send its next request within the idle limit."""

    def __init__(self, conn: Connection, user: str, peer: Peer | None = None) -> None:
        self.conn = conn
        self.user = user
        self.peer = peer
        self.closed = False
        self.persistent = False
        self._send_lock = threading.Lock()

    def post(self, msg: dict) -> bool:
        """Send a frame; False when the peer is gone (the reader will clean up)."""
        with self._send_lock:
            if self.closed:
                return False
            try:
                self.conn.send_bytes(wire.encode(msg))
                return True
            except (OSError, ValueError):
                self.closed = True
                return False

    def drop(self) -> None:
        """End this session from another thread: shut the socket down, so the peer sees
        the end at once and this session's reader wakes up and closes it. Closing it here
        would leave the reader blocked and could hand its descriptor number to a new
        connection under the reader's feet."""
        self.closed = True
        shut(self.conn)


def shut(conn: Connection) -> None:
    """Shut a connection down from any thread, so that its reader sees the end at once
    and closes it: closing it from here could close a descriptor number meanwhile reused
    by another connection."""
    try:
        sock = socket.socket(fileno=conn.fileno())
    except (OSError, ValueError):
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        sock.detach()


Handler = Callable[[Session, dict], dict | None]


class Server:
    """Accept connections on ``address`` and dispatch validated requests to ``handlers``,
    within ``limits`` (``qpy.admission``). ``key_for(user, peer)`` is the key a peer
    claiming ``user`` must prove, or None."""

    def __init__(self, address: str | tuple[str, int],
                 key_for: Callable[[str, Peer], bytes | None],
                 handlers: dict[str, Handler], *, limits: Limits = DEFAULT_LIMITS,
                 same_uid_only: bool = False,
                 on_close: Callable[[Session], None] | None = None) -> None:
        family = "AF_UNIX" if isinstance(address, str) else "AF_INET"
        self.listener = Listener(address, family=family, backlog=256)
        self.address = self.listener.address
        self.key_for = key_for
        self.handlers = handlers
        self.limits = limits
        self.same_uid_only = same_uid_only
        self.on_close = on_close
        self.admission = Admission(limits, os.getuid())
        self.deadlines = Deadlines()
        self._stopping = threading.Event()

    def serve_forever(self) -> None:
        """Accept until ``stop``; failures of one connection never end the loop."""
        while not self._stopping.is_set():
            try:
                conn = self.listener.accept()
            except OSError:
                if self._stopping.is_set():
                    return
                log.exception("accept failed")
                continue
            peer = peers.identify(conn.fileno())
            refused = self.admission.admit(peer)
            if refused is not None:
                log.warning("refused a connection from %s: %s", peer, refused,
                            extra={"rate_key": peer.key})
                conn.close()
                continue
            threading.Thread(target=self._serve_conn, args=(conn, peer), daemon=True).start()

    def start(self) -> None:
        """Serve in a daemon thread, so the owner's main thread stays free to wait and clean up."""
        threading.Thread(target=self.serve_forever, name="accept", daemon=True).start()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until ``stop`` was called."""
        return self._stopping.wait(timeout)

    def stop(self) -> None:
        """Stop serving; the accept thread dies with the process."""
        self._stopping.set()
        try:
            self.listener.close()
        except OSError:
            pass

    def sessions_of(self, user: str) -> list[Session]:
        """The open sessions authenticated as ``user``."""
        return self.admission.sessions_of(user)

    def _serve_conn(self, conn: Connection, peer: Peer) -> None:
        session, pending = None, True
        watch = Watch(lambda: shut(conn))
        try:
            self.deadlines.set(watch, self.limits.handshake)
            wire.tune_socket(conn, self.limits.handshake)
            if self.same_uid_only and peer.uid not in (None, os.getuid()):
                log.warning("refused a connection from uid %s", peer.uid,
                            extra={"rate_key": peer.key})
                return
            user = wire.server_handshake(conn, lambda claimed: self.key_for(claimed, peer))
            session, pending = Session(conn, user, peer), False
            refused = self.admission.authenticated(peer, user, session)
            if refused is not None:
                log.warning("refused a connection of %s from %s: %s", user, peer, refused,
                            extra={"rate_key": peer.key})
                session.post(wire.error_reply(f"too many connections: {refused}"))
                session = None
                return
            wire.tune_socket(conn, None, send=SEND_TIMEOUT)
            self._loop(session, watch)
        except wire.AuthError as exc:
            log.warning("%s (%s)", exc, peer, extra={"rate_key": peer.key})
        except (OSError, EOFError):
            pass
        except Exception:
            log.exception("connection handler failed")
        finally:
            self.deadlines.cancel(watch)
            if session is not None:
                session.closed = True
                if self.on_close is not None:
                    try:
                        self.on_close(session)
                    except Exception:
                        log.exception("on_close failed")
            self.admission.release(peer, session.user if session else None, session, pending)
            conn.close()

    def _loop(self, session: Session, watch: Watch) -> None:
        while not self._stopping.is_set():
            self.deadlines.set(watch, None if session.persistent else self.limits.idle)
            raw = session.conn.recv_bytes(wire.MAX_MESSAGE)
            reply, after = self._dispatch(session, raw)
            if reply is not None and not session.post(reply):
                return
            if after is not None:
                after()

    def _dispatch(self, session: Session, raw: bytes) -> tuple[dict | None, Callable | None]:
        """Decode and answer one request; the reply is always a dict."""
        try:
            msg = wire.decode(raw)
        except wire.WireError as exc:
            log.info("refused a message from %s: %s", session.user, exc,
                     extra={"rate_key": session.user})
            return wire.error_reply(str(exc), None, "bad_request"), None
        return answer(self.handlers, session, msg)


def answer(handlers: dict[str, Handler], session: Session, msg: dict
           ) -> tuple[dict, Callable | None]:
    """Validate and run one decoded request: the reply, and what to do after it is sent.
    Also how the master's command server asks on behalf of a command it runs."""
    try:
        wire.validate(msg)
        handler = handlers.get(msg["type"])
        if handler is None:
            raise wire.WireError(f"request type {msg['type']!r} is not served here")
        reply = handler(session, msg) or {}
    except (wire.WireError, RequestError) as exc:
        log.info("refused %s from %s: %s", msg.get("type"), session.user, exc,
                 extra={"rate_key": session.user})
        if isinstance(exc, RequestError):  # which may end the session after its reply
            return wire.error_reply(str(exc), msg.get("id"), exc.code), exc.after
        return wire.error_reply(str(exc), msg.get("id"), "bad_request"), None
    except Exception as exc:
        log.exception("request %s from %s failed", msg.get("type"), session.user)
        return wire.error_reply(f"internal error: {type(exc).__name__}: {exc}",
                                msg.get("id"), "internal"), None
    after = reply.pop("_after", None)
    reply.setdefault("ok", True)
    if "id" in msg:
        reply["re"] = msg["id"]
    if CHECK_REPLIES:
        reply = _checked(msg["type"], reply)
    return reply, after

