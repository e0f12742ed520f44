"""The enrolment codes the multiuser has issued (see ``qpy.enrolment``).

One code per user, kept as the handshake key it stands for (never the code itself) with
its expiry, 0600 in ``enrol/`` in the admin home. A code is tried only by its own user's
account on this machine (the kernel tells the multiuser who connects, ``qpy.peers``), a
few times per quarter of an hour; it is deleted when used or found expired.
"""

from __future__ import annotations

import json
import logging
import pwd
import time
from collections import deque
from pathlib import Path

from qpy import enrolment, paths
from qpy.peers import Peer

log = logging.getLogger("qpy.multiuser.enrol")
ATTEMPTS = 5  # handshakes with a user's code per WINDOW
WINDOW = 900.0


def uid_of(user: str) -> int | None:
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        return None


class Enrolments:
    """Issue, check and use up codes; callers that change them hold the multiuser's
    lock (``key`` only reads, and counts attempts under its own lock)."""

    def __init__(self, home: Path) -> None:
        self.dir = home / "enrol"
        self._attempts: dict[str, deque[float]] = {}

    def issue(self, user: str, seconds: float) -> str:
        """A new code's secret for ``user``, valid ``seconds``; any older code is void."""
        secret = enrolment.new_secret()
        paths.ensure_private_dir(self.dir)
        record = {"key": enrolment.join_key(user, secret).decode(),
                  "expires": time.time() + seconds}
        paths.write_private(self.dir / user, json.dumps(record) + "\n")
        return secret

    def key(self, user: str, peer: Peer) -> bytes | None:
        """The handshake key of ``@join:USER`` for a connection from ``peer``; None (and
        a line in the log) if that peer may not try, or there is no valid code."""
        uid = uid_of(user)
        if uid is None or peer.uid != uid:
            log.warning("enrolment code of %s tried from %s, not from %s's own account on "
                        "this machine: refused", user, peer, user, extra={"rate_key": peer.key})
            return None
        tried = self._attempts.setdefault(user, deque())
        now = time.monotonic()
        while tried and tried[0] < now - WINDOW:
            tried.popleft()
        if len(tried) >= ATTEMPTS:
            log.warning("enrolment of %s: %d attempts in %d minutes; refused for now", user,
                        len(tried), WINDOW // 60, extra={"rate_key": peer.key})
            return None
        tried.append(now)
        try:
            record = json.loads((self.dir / user).read_text())
        except (OSError, ValueError):
            log.warning("enrolment of %s: no code was issued (or it was used)", user)
            return None
        if time.time() > record.get("expires", 0):
            log.warning("enrolment of %s: the code expired", user)
            (self.dir / user).unlink(missing_ok=True)
            return None
        log.info("enrolment of %s tried from %s", user, peer)
        return str(record["key"]).encode()

    def use(self, user: str) -> bool:
        """Use up ``user``'s code; False if it was already used (or never issued)."""
        try:
            (self.dir / user).unlink()
        except FileNotFoundError:
            return False
        return True
