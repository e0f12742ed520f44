"""Failures the user is told in one line, the exit status of each kind, and asking again
while the master cannot be reached.

Imports only ``time``: the front's light path (``qpy connect`` attaching after the master
served the rest, ``qpy/front.py``) raises and reports these, and asks its master again,
without loading the wire.
"""

from __future__ import annotations

import time

TYPE_CHECKING = False  # typing is not imported: this module is on the way to the prompt
if TYPE_CHECKING:
    from collections.abc import Callable

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


def retried(request: Callable[[dict], dict], msg: dict, budget: float) -> dict:
    """``request(msg)``; while the master cannot be reached (it is being restarted: the
    next request starts another), again, backing off up to a second apart, for up to
    ``budget`` seconds after the first failure. The one loop for every command that
    outlives a master restart (``qpy wait``, ``log -f``, ``connect``)."""
    give_up, delay = None, 0.0
    while True:
        try:
            return request(msg)
        except ClientError as exc:
            now = time.monotonic()
            give_up = give_up or now + budget
            if exc.code != "unreachable" or now >= give_up:
                raise
        time.sleep(delay)
        delay = min(max(delay * 2, 0.05), 1.0)
