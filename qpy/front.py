"""The ``qpy`` command's front door: a running master answers most commands itself.

Importing click and multiprocessing costs a Python program several times what starting
the interpreter does, and a user's shell loop of ``qpy sub`` pays it on every job. So
when this user's master already runs, the command line is handed to it whole (argv,
directory, environment, umask, whether stdout is a terminal): the master, which has
everything imported, runs the very same click commands (``qpy/cli.py``) and sends back
their output and exit status. Anything the master cannot run for us (``restart``,
``finish``, ``tutorial``, ``wait``, ``log``, ``join``, help, or a command that needs this
terminal) and any failure
to reach it before the command was sent goes to the full command line in this process,
which also starts a master that is not running. ``qpy connect`` is served up to the
point where it needs this terminal: the master hands the session over, and this process
waits for it and attaches (``qpy.interactive.terminal``), asking the master over the
same connection.

This path imports only built-in modules: the framing and the key handshake of
``multiprocessing.connection`` (4-byte length, then bytes; an HMAC challenge each way
with the user's master key) are spoken here directly, and JSON goes through the C
accelerator. The master's side is ``qpy_master/command_server.py``.
"""

from __future__ import annotations

import os
import sys

# Commands that run in the user's own process whatever they are given: sending them to
# the master first would only add a round trip, and a master killed in it would end the
# command ("lost the connection") instead of letting ``wait`` start a new one and go on.
LOCAL = frozenset({"restart", "finish", "tutorial", "wait", "log", "join"})
HELP = frozenset({"-h", "--help"})
CHALLENGE, WELCOME, FAILURE = b"#CHALLENGE#", b"#WELCOME#", b"#FAILURE#"
LEGACY_LENGTH = 20  # a challenge without a digest name: HMAC-MD5, as before Python 3.12
HANDSHAKE_TIMEOUT = 5.0  # seconds for the master to answer at all (as qpy.wire's)


class Unserved(Exception):  # noqa: N818 - not an error: the full command line takes over
    """The master cannot take this command now; nothing has been asked of it yet."""


class Silent(Exception):  # noqa: N818
    """A master runs but does not answer: the full command line would wait just as long."""


# -- JSON through the C accelerator (json itself imports re, enum, ...) -------------------


class _Decoding:
    strict, object_hook, object_pairs_hook = True, None, None
    parse_float, parse_int, parse_constant, memo = float, int, float, {}


def _dumps(value: object) -> str:
    import _json

    if isinstance(value, str):
        return _json.encode_basestring_ascii(value)
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, dict):
        return "{" + ",".join(f"{_dumps(k)}:{_dumps(v)}" for k, v in value.items()) + "}"
    return "[" + ",".join(_dumps(v) for v in value) + "]"


def _loads(data: bytes) -> dict:
    import _json

    value, _ = _json.make_scanner(_Decoding())(data.decode(), 0)
    return value


# -- multiprocessing.connection's framing and challenge ------------------------------------


class _Conn:
    """One AF_UNIX connection speaking ``multiprocessing.connection``'s byte frames, each
    one JSON document (``send_bytes``/``recv_bytes``, the names of the server's side)."""

    def __init__(self, path: str) -> None:
        import _socket

        self.sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        self.sock.settimeout(HANDSHAKE_TIMEOUT)
        self.sock.connect(path)

    def send_bytes(self, data: bytes) -> None:
        self.sock.sendall(len(data).to_bytes(4, "big", signed=True) + data)

    def recv_bytes(self) -> bytes:
        size = int.from_bytes(self._exactly(4), "big", signed=True)
        return self._exactly(size)

    def _exactly(self, n: int) -> bytes:
        """``n`` bytes, received into one buffer: a reply of megabytes (the output of
        ``qpy history``) arrives in many pieces, and joining them one by one would copy
        it again for every piece."""
        data = bytearray(n)
        view, got = memoryview(data), 0
        while got < n:
            count = self.sock.recv_into(view[got:])
            if not count:
                raise EOFError("the qpy master closed the connection")
            got += count
        return bytes(data)


def _hmac_md5(key: bytes, message: bytes) -> bytes:
    """RFC 2104 HMAC over MD5: what ``multiprocessing.connection`` uses before 3.12."""
    import _md5

    if len(key) > 64:
        key = _md5.md5(key).digest()
    key = key.ljust(64, b"\0")
    inner = _md5.md5(bytes(b ^ 0x36 for b in key) + message).digest()
    return _md5.md5(bytes(b ^ 0x5C for b in key) + inner).digest()


def _answer(conn: _Conn, key: bytes) -> None:
    """Prove we hold the key (the server's challenge)."""
    message = conn.recv_bytes()
    if not message.startswith(CHALLENGE):
        raise Unserved("no challenge")
    message = message[len(CHALLENGE):]
    if len(message) == LEGACY_LENGTH:  # 20 random bytes (may well start with "{")
        digest = _hmac_md5(key, message)
    else:  # Python 3.12+: "{sha256}" and 40 random bytes
        import hmac

        name = message[1:message.find(b"}", 1, 22)]
        if not message.startswith(b"{") or not name.isalnum():
            raise Unserved("unknown challenge")
        digest = b"{" + name + b"}" + hmac.new(key, message, name.decode()).digest()
    conn.send_bytes(digest)
    if conn.recv_bytes() != WELCOME:
        raise Unserved("the master refused our key")


def _deliver(conn: _Conn, key: bytes) -> None:
    """Make the master prove it holds the key too: nobody else's socket gets our env."""
    import _operator

    message = os.urandom(20)
    conn.send_bytes(CHALLENGE + message)
    ok = _operator._compare_digest(conn.recv_bytes(), _hmac_md5(key, message))
    conn.send_bytes(WELCOME if ok else FAILURE)
    if not ok:
        raise Unserved("the master did not prove the key")


# -- the command --------------------------------------------------------------------------


def _connect() -> _Conn:
    """An authenticated connection to this user's running master, or Unserved."""
    import pwd

    home = os.environ.get("QPY_HOME") or os.path.join(os.path.expanduser("~"), ".qpy")
    try:
        with open(os.path.join(home, "master.key"), "rb") as f:
            st = os.fstat(f.fileno())
            key = f.read().strip()
        if st.st_mode & 0o077 or not key:
            raise Unserved("key file")  # the full path explains what is wrong with it
        conn = _Conn(os.path.join(home, "master.sock"))
        hello = {"v": 1, "type": "hello", "user": pwd.getpwuid(os.getuid()).pw_name}
        conn.send_bytes(_dumps(hello).encode())
        _answer(conn, key)
        _deliver(conn, key)
    except TimeoutError as exc:
        raise Silent(str(exc) or "timed out") from None
    except (OSError, EOFError, ValueError) as exc:
        raise Unserved(str(exc)) from None
    conn.sock.settimeout(None)  # a command may wait as long as it needs (qpy wait)
    return conn


def _request(argv: list[str]) -> dict:
    """The ``cli`` request: everything the master needs to run the command as if here."""
    umask = os.umask(0o022)
    os.umask(umask)
    return {"v": 1, "type": "cli", "id": 1, "argv": argv, "cwd": os.getcwd(),
            "env": dict(os.environ), "tty": sys.stdout.isatty(), "umask": umask,
            "tty_in": sys.stdin.isatty()}


def served(argv: list[str]) -> int | None:
    """Run ``argv`` in the master: its exit status, or None for the full command line."""
    if not argv or argv[0] in LOCAL or not HELP.isdisjoint(argv):
        return None
    if argv[0] == "_complete":  # completion never hangs the shell
        _deadline()
    try:
        request = _request(argv)
        conn = _connect()
    except (Unserved, OSError):
        return None
    except Silent as exc:
        sys.stderr.write(f"qpy: cannot talk to the qpy master: {exc}\n")
        return 4
    try:
        conn.send_bytes(_dumps(request).encode())
        reply = _reply(conn, 1, _show_output)
    except (OSError, EOFError, ValueError) as exc:
        sys.stderr.write(f"qpy: lost the connection to the qpy master: {exc}\n")
        return 4
    if reply.get("local") or not reply.get("ok"):
        return None  # nothing ran: e.g. a master too old to serve commands
    _show_output(reply)
    if reply.get("attach") is not None:
        return _attach(_Asker(conn), reply["attach"], bool(reply.get("created")))
    return reply.get("exit", 1)


def _reply(conn: _Conn, msg_id: int, on_event) -> dict:
    """The reply to request ``msg_id``; what comes before it (events) goes to
    ``on_event``."""
    while True:
        message = _loads(conn.recv_bytes())
        if message.get("re") == msg_id:
            return message
        on_event(message)


def _show_output(event: dict) -> None:
    """What a command in the master wrote: while it runs (events), and at its end."""
    sys.stdout.write(event.get("out", ""))
    sys.stderr.write(event.get("err", ""))
    sys.stdout.flush()


class _Asker:
    """Requests to the master after a hand-over, on the command's connection: one that
    was lost (a master restarted, or the idle limit while attached) is made again, and
    with no master answering ``qpy.client`` takes over (it starts one)."""

    def __init__(self, conn: _Conn | None) -> None:
        self.conn, self.last = conn, 1

    def __call__(self, msg: dict, **_: object) -> dict:
        for _attempt in range(2):
            try:
                if self.conn is None:
                    self.conn = _connect()
                return self._call(msg)
            except (Unserved, Silent, OSError, EOFError, ValueError):
                self._drop()
        from qpy.client import request

        return request(msg)

    def _call(self, msg: dict) -> dict:
        self.last += 1
        self.conn.send_bytes(_dumps({"v": 1, **msg, "id": self.last}).encode())
        reply = _reply(self.conn, self.last, lambda _event: None)
        if not reply.get("ok"):
            from qpy.errors import ClientError

            raise ClientError(reply.get("error") or "the qpy master refused the request",
                              str(reply.get("code")))
        return reply

    def _drop(self) -> None:
        if self.conn is not None:
            self.conn.sock.close()
        self.conn = None


def _attach(asker: _Asker, session: dict, created: bool) -> int:
    """The rest of a served ``qpy connect``: wait for the session and attach to it here."""
    from qpy import interactive
    from qpy.errors import ClientError, told
    from qpy.invocation import local, using

    sys.stdout.flush()
    sys.stderr.flush()
    try:
        with using(local(asker)):
            return interactive.terminal(session, created)
    except ClientError as exc:
        return told(exc, sys.stderr)
    except (BrokenPipeError, KeyboardInterrupt):
        return 1


def _deadline() -> None:
    """Exit quietly when the completion helper takes too long, whatever it waits for."""
    import signal

    from qpy.completion import ID_DEADLINE

    signal.signal(signal.SIGALRM, lambda *_: os._exit(1))
    signal.alarm(ID_DEADLINE)


def main() -> None:
    """The ``qpy`` console script."""
    from qpy import trace

    trace.mark("qpy: main")
    try:
        code = served(sys.argv[1:])
    except KeyboardInterrupt:  # as click ends the full command line on Ctrl-C
        sys.stderr.write("\nAborted!\n")
        code = 1
    if code is None:
        from qpy import cli

        trace.mark("qpy: cli imported")
        code = cli.run()
    from qpy.quick_exit import exit_now

    exit_now(code)
