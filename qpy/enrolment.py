"""Enrolment codes: how a user fetches their key without anyone copying files for them.

``qpy-admin adduser USER`` prints a one-time code that expires; USER runs ``qpy join
CODE`` on the login host. The code holds the multiuser's port (and its host, if it is
not this machine) and a secret of 100 random bits. The secret never crosses the wire:
both sides derive from it, and from the user's name, the key of an ordinary handshake
(``join_key``) under the identity ``@join:USER``, so a wrong code fails the handshake
and a process posing as the multiuser learns nothing from it. The multiuser keeps only
the derived key, serves ``join`` to the named user's own account only, and once.
Imports only the standard library: the CLI and the multiuser share it.
"""

from __future__ import annotations

import hashlib
import re
import secrets

ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # 32 symbols, none easily mistaken
GROUPS, GROUP = 4, 5  # 20 symbols: 100 bits
JOIN_PREFIX = "@join:"
_CODE = re.compile(r"(?:(?P<host>[A-Za-z0-9_.\-\[\]:]+):)?(?P<port>[0-9]{1,5})-"
                   r"(?P<secret>[A-Za-z0-9]{5}(?:-?[A-Za-z0-9]{5}){3})")


class CodeError(ValueError):
    """Text that is not an enrolment code."""


def new_secret() -> str:
    raw = "".join(secrets.choice(ALPHABET) for _ in range(GROUPS * GROUP))
    return "-".join(raw[i:i + GROUP] for i in range(0, len(raw), GROUP))


def code(host: str, port: int, secret: str) -> str:
    """The code the admin hands out: ``PORT-SECRET``, or ``HOST:PORT-SECRET`` when the
    multiuser does not listen on this machine's loopback address."""
    where = str(port) if host in ("127.0.0.1", "localhost", "") else f"{host}:{port}"
    return f"{where}-{secret}"


def parse(text: str) -> tuple[str, int, str]:
    """(host, port, secret) of a code; CodeError if it is not one."""
    found = _CODE.fullmatch(text.strip())
    if found is None or not 0 < int(found["port"]) < 65536:
        raise CodeError(f"{text.strip()[:60]!r} is not an enrolment code "
                        "(they look like 41234-ABCDE-FGHJK-LMNPQ-RSTUV)")
    return found["host"] or "127.0.0.1", int(found["port"]), found["secret"]


def join_key(user: str, secret: str) -> bytes:
    """The handshake key of ``@join:USER`` for a code's secret (case and dashes do not
    matter, so a code read aloud or retyped still works)."""
    normal = secret.replace("-", "").upper()
    return hashlib.sha256(f"qpy-join\0{user}\0{normal}".encode()).hexdigest().encode()


def claim(user: str) -> str:
    return JOIN_PREFIX + user


def joining(identity: str) -> str | None:
    """The user an ``@join:USER`` identity enrols, or None."""
    return identity[len(JOIN_PREFIX):] if identity.startswith(JOIN_PREFIX) else None
