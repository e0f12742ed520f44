"""Failures the user is told in one line, and the exit status of each kind.

No imports: the front's light path (``qpy connect`` attaching after the master served the
rest, ``qpy/front.py``) raises and reports these without loading the wire.
"""

from __future__ import annotations

EXIT_STATUS = {
    "refused": 1,  # well-formed, but cannot be done
    "denied": 1,  # not allowed for this user
    "internal": 1,  # a bug: the daemon logged it and goes on serving
    "bad_request": 2,  # malformed input: options, values, selections, wire messages
    "not_found": 3,  # the selection or job ID matched nothing
    "unreachable": 4,  # a daemon cannot be reached
}


class ClientError(Exception):
    """Something the user must be told in one line; ``code`` (a key of
    ``EXIT_STATUS``) decides the exit status."""

    def __init__(self, text: str, code: str = "refused") -> None:
        super().__init__(text)
        self.code = code


def told(exc: ClientError, err) -> int:
    """Tell the user ``exc`` on ``err`` (``qpy: ...``); the exit status it calls for."""
    err.write(f"qpy: {exc}\n")
    return EXIT_STATUS.get(exc.code, 1)
