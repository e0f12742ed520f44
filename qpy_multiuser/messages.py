"""saveMessages: the last requests the multiuser served and its replies, for
``qpy-admin variables`` (the manual's debugging aid), each cut to a bounded size."""

from __future__ import annotations

import json
import time
from collections import deque

MESSAGES_KEPT = 1000  # saveMessages keeps this many of the last requests
MESSAGE_CHARS = 2000  # and this much of each request's and reply's JSON


class MessageLog:
    """Off until ``keep(True)``; ``entries`` is what ``variables`` shows."""

    def __init__(self) -> None:
        self._kept: deque[dict] | None = None

    @property
    def on(self) -> bool:
        return self._kept is not None

    @property
    def entries(self) -> list[dict]:
        return list(self._kept or ())

    def keep(self, on: bool) -> None:
        """Start keeping the requests served, or stop and drop them."""
        if not on:
            self._kept = None  # a request in flight may still add to the dropped deque
        elif self._kept is None:
            self._kept = deque(maxlen=MESSAGES_KEPT)

    def add(self, started: float, user: str, kind: str, request: dict, reply: dict) -> None:
        """Keep one request and its reply, if saveMessages is on; each cut to a bounded
        size, so a thousand of them stay small whatever the masters send."""
        kept = self._kept
        if kept is None:
            return
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started))
        kept.append({"time": f"{stamp}.{int(started % 1 * 1000):03d}", "user": user,
                     "type": kind, "request": _cut(request), "reply": _cut(reply)})


def _cut(value: dict) -> str:
    """``value`` as JSON, at most MESSAGE_CHARS long (what is cut off ends in ``...``)."""
    text = json.dumps(value, default=repr)
    return text if len(text) <= MESSAGE_CHARS else text[:MESSAGE_CHARS - 3] + "..."
