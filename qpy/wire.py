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

# The kinds of failure an error reply names in "code", and the exit status each gives the
# CLIs (the manual's "Errors and exit status"): in qpy/errors.py, which needs no wire.
from qpy.errors import EXIT_STATUS

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


# Field specs: "int", "float" (int accepted), "str", "bool", "dict", "list", "any"; a leading
# "?" allows null; "[x]" is a list of x; "{str}" a str->str mapping; a name of RECORDS is a
# dict of that shape. A trailing "=" marks the field optional (absent means null/empty).
Schema = dict[str, str]

# One job as ``qpy sub`` asks for it: a ``sub`` request's fields, a bulk file's line each.
SPEC: Schema = {
    "command": "str", "run": "?str=", "n_cores": "int", "mem": "float", "attr": "?str",
    "copy": "?bool", "script": "?str", "argv": "?[str]=", "script_index": "?int=",
    "requeue": "bool=", "time_limit": "?int=", "mail": "?str=", "exclusive": "bool=",
    "n_nodes": "int=",  # whole nodes (-N); the queue's semantics (issue 13):
    "after": "[int]=", "afterok": "[int]=", "priority": "int=", "where": "?str=",
}

SCHEMAS: dict[str, Schema] = {
    # CLI -> master
    "ping": {},
    "sub": {**SPEC, "cwd": "str", "env": "{str}", "umask": "?int=", "array": "?[int]=",
            "array_max": "?int=", "records": "bool="},
    "bulk": {"jobs": "[spec]", "cwd": "str", "env": "{str}", "umask": "?int=",
             "records": "bool="},
    "hold": {"select": "dict", "held": "bool"},
    "why": {"job": "int"},
    "check": {"select": "dict"},
    "kill": {"select": "dict"},
    "clean": {"select": "dict"},
    "config": {"key": "?str", "values": "[str]"},
    "ctrl": {"action": "str", "select": "dict=", "target": "?str="},
    "notes": {"job": "?int", "text": "?str"},
    "status": {}, "finish": {},
    # runs, ends and waiting
    "wait": {"select": "dict", "timeout": "float"},
    "history": {"select": "dict", "since": "?float=", "until": "?float=", "json": "bool="},
    "requeue": {"select": "dict"},
    # qpy connect -> master: interactive sessions (qpy_master/sessions.py)
    "sessions": {},
    "connect": {"cwd": "str", "env": "{str}", "n_cores": "int", "mem": "float",
                "attr": "?str", "name": "?str", "gui": "?[str]", "umask": "?int="},
    "session_wait": {"job": "int", "until": "str", "timeout": "float"},
    # qpy/front.py -> master: a whole command line, run by the master (command server)
    "cli": {"argv": "[str]", "cwd": "str", "env": "{str}", "tty": "bool", "umask": "?int=",
            "tty_in": "bool="},
    # master -> multiuser
    "hello": {"running": "[dict]", "queue_size": "int"},
    "slots": {"release": "[int]", "want": "[dict]", "queue_size": "int",
              "chained": "[dict]="},  # jobs started in ended jobs' slots (chaining)
    "explain": {"cores": "int", "mem": "float", "attr": "?str", "nodes": "int="},
    "idle_report": {"sessions": "[dict]"},
    # admin -> multiuser
    "admin": {"command": "str", "args": "[str]"},
    # a new user's enrolment code -> multiuser (qpy join)
    "join": {},
}

# The records replies are made of (and the job specs of a bulk request).
RECORDS: dict[str, Schema] = {
    "job": {  # qpy.model.Job.public()
        "id": "int", "status": "str", "command": "str", "cwd": "str", "n_cores": "int",
        "mem": "float", "attr": "?str", "node": "?str", "t_queue": "float",
        "t_start": "?float", "t_end": "?float", "exit_code": "?int", "signal": "?int",
        "reason": "?str", "notes": "?str", "requeue": "bool", "exclusive": "bool=",
        "n_nodes": "int=", "nodes": "?[str]=",  # a whole-node job's nodes, first first
        "time_limit": "?int", "cpu": "?float", "peak_mem": "?float", "mail": "?str=",
        # the queue's semantics (issue 13); position: a queued job's place, 1 starts next
        "priority": "int", "held": "bool", "after": "[int]", "afterok": "[int]",
        "array_id": "?int", "array_index": "?int", "array_max": "?int", "position": "?int",
        # interactive sessions (qpy connect)
        "kind": "?str=", "name": "?str=", "idle_since": "?float=", "session": "?dict=",
    },
    "spec": SPEC,
    "user": {"user": "str", "used": "int", "minimum": "int", "extra": "int", "queue": "int",
             "connected": "bool"},
    "node": {
        "name": "str", "address": "str", "cores": "int", "mem": "float", "attrs": "[str]",
        "up": "bool", "state": "str", "reason": "?str", "pref_multicore": "bool",
        "check_dir": "?str", "used_cores": "int=", "used_mem": "float=", "load": "?float=",
        "mem_in_use": "?float=", "outsiders": "?int=", "disk": "?dict=", "tools": "?[str]=",
        # how the node enforces allocations (qpy/limits.py): the nodes file's settings,
        # and the memory limit in force as monitoring found it
        "cgroup": "?str=", "rlimit_as": "bool=", "cpu_lock": "?str=", "memory_limit": "?str=",
        # drained by the admin (qpy-admin drain): since when (None: not), and why
        "drain_since": "?float=", "drain_reason": "?str=",
    },
    # cores, mem: what a whole-node (exclusive) job got, the node's; others: its other nodes
    "grant": {"job": "int", "node": "str", "address": "str", "cores": "int=", "mem": "float=",
              "others": "[part]="},
    "part": {"node": "str", "address": "str", "cores": "int", "mem": "float"},
    "share": {"user": "str", "used": "int", "share": "int"},  # explain: who waits
    "closest": {"name": "str", "free_cores": "int", "free_mem": "float"},
    "session": {  # an interactive job as qpy connect sees it (qpy_master/sessions.py)
        "id": "int", "name": "?str", "kind": "str", "status": "str", "node": "?str",
        "address": "?str", "local": "bool", "n_cores": "int", "mem": "float", "ready": "bool",
        "dir": "?str", "socket": "?str", "display": "?int", "attached": "?int", "idle": "?float",
        "xpra": "?str", "reason": "?str", "waiting": "?str", "exit_code": "?int", "signal": "?int",
        "attach": "?[str]=",  # how the login host's terminal reaches a ready remote session
    },
}

# What a successful reply to each request carries besides "ok" (and "re", "v"). Every
# reply may carry "text": what the CLI prints for the user.
REPLIES: dict[str, Schema] = {
    "ping": {"pid": "int"},
    # a single job, or the first and last of an array or bulk file; with "records", them;
    # warning: for stderr (sub --mail on a host without sendmail)
    "sub": {"job": "int", "last": "int=", "jobs": "[job]=", "warning": "str="},
    "bulk": {"job": "int", "last": "int=", "jobs": "[job]=", "warning": "str="},
    "hold": {"jobs": "[int]"},
    "why": {"job": "int", "status": "str", "reason": "str", "details": "dict"},
    "check": {"jobs": "[job]", "fmt": "str", "colour": "bool", "scheme": "[str]",
              "paused": "bool", "limit": "?str="},
    "kill": {"undone": "[int]", "killing": "[int]"},
    "clean": {"removed": "[int]"}, "config": {"settings": "dict="},
    "ctrl": {}, "notes": {},
    "status": {"users": "[user]", "nodes": "[node]", "allocator": "{str}=", "sessions": "[dict]="},
    "finish": {},
    "wait": {"jobs": "[job]", "pending": "[int]"},
    "history": {"table": "str=", "runs_json": "str="},  # the text qpy history prints
    "requeue": {"requeued": "[int]"},
    "sessions": {"sessions": "[session]", "notices": "[str]"},
    "connect": {"job": "int", "session": "session"},
    "session_wait": {"session": "session"},
    "cli": {"exit": "int=", "out": "str=", "err": "str=", "local": "bool=",
            "attach": "session=", "created": "bool="},  # qpy connect: the client attaches
    "hello": {"nodes": "[node]", "unaccounted": "[int]=", "interactive": "dict="},
    "slots": {"grants": "[grant]", "waiting": "bool", "decision_us": "float", "more": "bool",
              "limit": "?str=",  # the user limit that keeps queued jobs waiting
              "chain": "?int="},  # the epoch of a permission to chain (chaining.py; None: ask)
    # what keeps such a job from starting now, as the allocator sees it (qpy why)
    "explain": {"used": "int", "minimum": "int", "extra": "int", "limit": "?str=", "grow": "bool",
                "above_share": "bool", "waiting": "[share]", "free": "int", "free_for": "int",
                "node": "?str", "closest": "?closest", "matching": "int", "down": "[str]",
                "whole": "int="},  # nodes free as a whole that fit (whole-node jobs)
    "idle_report": {},
    "admin": {"variables": "dict=", "bundle": "{str}=", "users": "[user]=",
              "nodes": "[node]=", "code": "str=", "sessions": "[dict]="},
    "join": {"bundle": "{str}"},
}

# Events: frames without "re" pushed to a master by the multiuser (wake, nodes, bye; limits
# and idle_action for interactive sessions; unchain) or to a client by the master (output).
EVENTS = ("wake", "nodes", "bye", "output", "limits", "idle_action", "unchain")


def _check(value: object, spec: str) -> bool:
    """Whether ``value`` fits ``spec``; bools are never accepted as numbers."""
    if spec.startswith("?"):
        return value is None or _check(value, spec[1:])
    if spec.startswith("[") and spec.endswith("]"):
        return isinstance(value, list) and all(_check(v, spec[1:-1]) for v in value)
    if spec == "{str}":
        return isinstance(value, dict) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items())
    if spec in RECORDS:
        return isinstance(value, dict) and _problem(value, RECORDS[spec], (), spec) is None
    if spec == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if spec == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if spec == "any":
        return True
    kinds = {"str": str, "bool": bool, "dict": dict, "list": list}
    return isinstance(value, kinds[spec])


def _problem(msg: dict, schema: Schema, allowed: tuple[str, ...], kind: str) -> str | None:
    """What is wrong with ``msg`` against ``schema`` (extra fields beyond ``allowed``
    included), or None."""
    extra = set(msg) - set(schema) - set(allowed)
    if extra:
        return f"unknown field {sorted(extra)[0]!r} in {kind}"
    for name, spec in schema.items():
        if name not in msg:
            if spec.endswith("="):
                continue
            return f"missing field {name!r} in {kind}"
        if not _check(msg[name], spec.rstrip("=")):
            return f"field {name!r} of {kind} must be {spec.rstrip('=')}"
    return None


def validate(msg: dict) -> dict:
    """Check a request against its schema: unknown types and fields are refused by name."""
    kind = msg.get("type")
    schema = SCHEMAS.get(kind) if isinstance(kind, str) else None
    if schema is None:
        raise WireError(f"unknown request type {kind!r}")
    problem = _problem(msg, schema, ("v", "type", "id"), f"{kind} request")
    if problem:
        raise WireError(problem)
    if "id" in msg and not _check(msg["id"], "int"):
        raise WireError("field 'id' must be int")
    return msg


def reply_problem(kind: str, reply: dict) -> str | None:
    """What is wrong with a reply to a ``kind`` request, or None: the daemons check their
    own replies with this when QPY_CHECK_REPLIES is set (the tests set it)."""
    if reply.get("ok") is False:
        return _problem(reply, {"ok": "bool", "error": "str", "code": "str"}, ("v", "re"),
                        "error reply") or (None if reply["code"] in EXIT_STATUS
                                           else f"unknown error code {reply['code']!r}")
    schema = {"ok": "bool", "text": "str=", **REPLIES[kind]}
    return _problem(reply, schema, ("v", "re"), f"{kind} reply")


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


def error_reply(text: str, re: object = None, code: str = "refused") -> dict:
    """The one shape of every error reply: the text for the user and its kind."""
    reply = {"ok": False, "error": text, "code": code}
    if isinstance(re, int) and not isinstance(re, bool):
        reply["re"] = re
    return reply


def tune_socket(conn: Connection, timeout: float | None,
                send: float | None | str = "same") -> None:
    """TCP_NODELAY (else Nagle + delayed ACK cost ~40 ms per exchange) and I/O timeouts
    (None: none), for sends the same as for reads unless ``send`` says otherwise.

    The timeouts make a silent peer fail its read instead of holding a thread forever.
    """
    sock = socket.socket(fileno=conn.fileno())
    try:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for option, secs in ((socket.SO_RCVTIMEO, timeout),
                             (socket.SO_SNDTIMEO, timeout if send == "same" else send)):
            secs = 0.0 if secs is None else float(secs)
            tv = struct.pack("ll", int(secs), int((secs % 1) * 1_000_000))
            sock.setsockopt(socket.SOL_SOCKET, option, tv)
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
    """A daemon answered with an error, or did not answer; the text says which, ``code``
    which kind of failure it was (a key of EXIT_STATUS)."""

    def __init__(self, text: str, code: str = "refused") -> None:
        super().__init__(text)
        self.code = code if code in EXIT_STATUS else "refused"


def exchange(conn: Connection, msg: dict, timeout: float, who: str) -> dict:
    """One request on a fresh connection, which is then closed; every failure is Refused
    with one line of text, which the CLIs print as it is."""
    try:
        reply = call(conn, msg, timeout)
    except (OSError, EOFError, TimeoutError, WireError) as exc:
        raise Refused(f"no reply from {who}: {exc}", "unreachable") from None
    finally:
        conn.close()
    if not reply.get("ok"):
        raise Refused(reply.get("error") or f"{who} refused the request",
                      str(reply.get("code")))
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
