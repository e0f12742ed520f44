"""The one wire schema every tier speaks.

Frames are ``multiprocessing.connection`` byte messages holding JSON objects, written and
read only with ``send_bytes``/``recv_bytes``. Every message carries the protocol version
``v`` and a ``type``; requests may carry an ``id`` that the reply echoes as ``re`` so one
persistent connection can carry replies and pushed events at once.

Authentication is per user: the client first sends a ``hello`` naming who it claims to be,
then both sides run the HMAC challenge of ``multiprocessing.connection`` with *that user's*
key, in both directions. The server therefore binds the connection to the user whose key
answered; no later message can name another user.
"""

from __future__ import annotations

# Never Connection.send/recv: those pickle, and unpickling a peer's bytes runs its code.
import json
import os
import re
import socket
import struct
from collections.abc import Callable
from multiprocessing.connection import Client, Connection, answer_challenge, deliver_challenge

PROTOCOL = 1
MAX_MESSAGE = 16 * 1024 * 1024
HELLO_MAX = 4096
HANDSHAKE_TIMEOUT = 5.0
INT_LIMIT = 2**63  # every integer on the wire fits SQLite's 64 bits
_LONG_DIGITS = re.compile(rb"[0-9]{19}")  # only then can an integer be out of range


class WireError(ValueError):
    """A message that does not fit the schema; the peer gets this text as an error reply."""


class AuthError(Exception):
    """The peer could not prove it holds the key of the user it named."""


# Field specs: "int", "float" (int accepted), "str", "bool", "dict", "list"; a leading "?"
# allows null; "[x]" is a list of x; "{str}" a str->str mapping. A trailing "=" marks the
# field optional (absent means null/empty).
SCHEMAS: dict[str, dict[str, str]] = {
    # CLI -> master
    "ping": {},
    "sub": {
        "command": "str", "run": "?str=", "cwd": "str", "env": "{str}", "n_cores": "int",
        "mem": "float", "attr": "?str", "copy": "?bool", "script": "?str", "argv": "?[str]=",
        "script_index": "?int=", "requeue": "bool=",
    },
    "check": {"select": "dict"},
    "kill": {"select": "dict"},
    "clean": {"select": "dict"},
    "config": {"key": "?str", "values": "[str]"},
    "ctrl": {"action": "str", "select": "dict=", "target": "?str="},
    "notes": {"job": "?int", "text": "?str"},
    "status": {},
    "finish": {},
    # master -> multiuser
    "hello": {"running": "[dict]", "queue_size": "int"},
    "slots": {"release": "[int]", "want": "[dict]", "queue_size": "int"},
    # admin -> multiuser
    "admin": {"command": "str", "args": "[str]"},
}

EVENTS = ("wake", "nodes", "bye")


def _check(value: object, spec: str) -> bool:
    """Whether ``value`` fits ``spec``; bools are never accepted as numbers."""
    if spec.startswith("?"):
        return value is None or _check(value, spec[1:])
    if spec.startswith("[") and spec.endswith("]"):
        return isinstance(value, list) and all(_check(v, spec[1:-1]) for v in value)
    if spec == "{str}":
        return isinstance(value, dict) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items())
    if spec == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if spec == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    kinds = {"str": str, "bool": bool, "dict": dict, "list": list}
    return isinstance(value, kinds[spec])


def validate(msg: dict) -> dict:
    """Check a request against its schema: unknown types and fields are refused by name."""
    kind = msg.get("type")
    schema = SCHEMAS.get(kind) if isinstance(kind, str) else None
    if schema is None:
        raise WireError(f"unknown request type {kind!r}")
    extra = set(msg) - set(schema) - {"v", "type", "id"}
    if extra:
        raise WireError(f"unknown field {sorted(extra)[0]!r} in {kind} request")
    for name, spec in schema.items():
        optional = spec.endswith("=")
        spec = spec.rstrip("=")
        if name not in msg:
            if optional:
                continue
            raise WireError(f"missing field {name!r} in {kind} request")
        if not _check(msg[name], spec):
            raise WireError(f"field {name!r} of {kind} request must be {spec}")
    if "id" in msg and not _check(msg["id"], "int"):
        raise WireError("field 'id' must be int")
    return msg


def encode(msg: dict) -> bytes:
    """Serialise one message, stamping the protocol version."""
    return json.dumps({"v": PROTOCOL, **msg}, separators=(",", ":")).encode()


def _int64(text: str) -> int:
    if len(text.lstrip("-")) > 19 or not -INT_LIMIT <= int(text) < INT_LIMIT:
        raise WireError(f"malformed message: integer out of range {text[:30]}")
    return int(text)


def decode(raw: bytes) -> dict:
    """Parse one frame; anything but a JSON object of our protocol version is a WireError,
    and so is an integer beyond 64 bits (a job ID the store cannot hold)."""
    try:
        if _LONG_DIGITS.search(raw):  # rare: only then pay for checking each integer
            msg = json.loads(raw, parse_int=_int64)
        else:
            msg = json.loads(raw)
    except WireError:
        raise
    except (ValueError, RecursionError) as exc:  # bad JSON or UTF-8, int() beyond its limit
        raise WireError(f"malformed message: {type(exc).__name__}") from None
    if not isinstance(msg, dict):
        raise WireError("malformed message: not a JSON object")
    if msg.get("v") != PROTOCOL:
        raise WireError(f"unsupported protocol version {msg.get('v')!r} (expected {PROTOCOL})")
    return msg


def error_reply(text: str, re: object = None) -> dict:
    """The one shape of every error reply."""
    reply = {"ok": False, "error": text}
    if isinstance(re, int) and not isinstance(re, bool):
        reply["re"] = re
    return reply


def tune_socket(conn: Connection, timeout: float | None) -> None:
    """TCP_NODELAY (else Nagle + delayed ACK cost ~40 ms per exchange) and I/O timeouts.

    The timeouts make a silent peer fail its read instead of holding a thread forever.
    """
    sock = socket.socket(fileno=conn.fileno())
    try:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        secs = 0.0 if timeout is None else timeout
        tv = struct.pack("ll", int(secs), int((secs % 1) * 1_000_000))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)
    finally:
        sock.detach()


def peer_uid(conn: Connection) -> int | None:
    """The Unix uid of an AF_UNIX peer (None for TCP), checked before any key exchange."""
    sock = socket.socket(fileno=conn.fileno())
    try:
        if sock.family != socket.AF_UNIX:
            return None
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        return struct.unpack("3i", creds)[1]
    finally:
        sock.detach()


def server_handshake(conn: Connection, key_for: Callable[[str], bytes | None]) -> str:
    """Authenticate a new connection and return the user it is bound to.

    An unknown user still goes through a challenge (with a throw-away key) so that a
    prober learns nothing beyond "authentication failed".
    """
    try:
        hello = decode(conn.recv_bytes(HELLO_MAX))
    except (OSError, EOFError, WireError) as exc:
        raise AuthError(f"bad hello: {exc}") from None
    user = hello.get("user")
    if hello.get("type") != "hello" or not isinstance(user, str) or not user:
        raise AuthError("bad hello: no user")
    key = key_for(user)
    try:
        deliver_challenge(conn, key or os.urandom(32))
        answer_challenge(conn, key or os.urandom(32))
    except Exception as exc:  # AuthenticationError, EOF, timeouts, garbage
        raise AuthError(f"authentication failed for {user!r}: {type(exc).__name__}") from None
    if key is None:
        raise AuthError(f"unknown user {user!r}")
    return user


def connect(address: str | tuple[str, int], user: str, key: bytes,
            timeout: float | None = HANDSHAKE_TIMEOUT) -> Connection:
    """Open an authenticated connection to a daemon, proving and checking the key both ways."""
    conn = Client(address)
    try:
        tune_socket(conn, timeout)
        conn.send_bytes(json.dumps({"v": PROTOCOL, "type": "hello", "user": user}).encode())
        answer_challenge(conn, key)
        deliver_challenge(conn, key)
    except BaseException:
        conn.close()
        raise
    return conn


def call(conn: Connection, msg: dict, timeout: float | None = None) -> dict:
    """One request and its reply on an open connection (pushed events are skipped)."""
    conn.send_bytes(encode(msg))
    while True:
        if timeout is not None and not conn.poll(timeout):
            raise TimeoutError(f"no reply to {msg.get('type')} within {timeout:g} s")
        reply = decode(conn.recv_bytes(MAX_MESSAGE))
        if "re" in reply or reply.get("type") not in EVENTS:
            return reply


class Refused(Exception):
    """A daemon answered with an error, or did not answer; the text says which."""


def exchange(conn: Connection, msg: dict, timeout: float, who: str) -> dict:
    """One request on a fresh connection, which is then closed; every failure is Refused
    with one line of text, which the CLIs print as it is."""
    try:
        reply = call(conn, msg, timeout)
    except (OSError, EOFError, TimeoutError, WireError) as exc:
        raise Refused(f"no reply from {who}: {exc}") from None
    finally:
        conn.close()
    if not reply.get("ok"):
        raise Refused(reply.get("error") or f"{who} refused the request")
    return reply


def parse_address(text: str, port: str | int) -> tuple[str, int]:
    """A TCP address from the contents of the address and port files."""
    host = text.strip() or "127.0.0.1"
    try:
        number = int(str(port).strip())
    except ValueError:
        raise ValueError(f"invalid port {str(port).strip()!r}") from None
    if not 0 < number < 65536:
        raise ValueError(f"invalid port {number}")
    return host, number


def whoami() -> str:
    """The Unix user name of this process, which is who qpy acts for."""
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name
