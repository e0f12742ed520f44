"""How many connections a daemon takes from whom, and for how long.

One peer must not be able to take the room others need: connections are counted per
peer (the kernel's uid for a local peer, the address for a remote one, see
``qpy.peers``) while they authenticate, and per user once they have. Beyond the soft
limit only the daemon's own account (the admin, for the multiuser) and peers holding no
connection yet (a master that registers) get in, up to a hard limit that keeps the
daemon within its file descriptors.

Time limits are deadlines, not socket timeouts, because a peer that trickles one byte
every few seconds satisfies every per-read timeout: the whole handshake has one
deadline, and so has the wait for each request of a session that is not a master's
link. ``Deadlines`` shuts such a connection down when its deadline passes.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from qpy.peers import Peer


@dataclass(frozen=True)
class Limits:
    """None switches a limit off."""

    max_clients: int = 512  # the soft limit on connections at once
    reserve: int = 64  # above it: the daemon's own account and a peer's first connection
    pending_per_uid: int | None = None  # handshakes at once per local account
    pending_own_uid: int | None = None  # the same for the daemon's own account
    pending_per_host: int | None = None  # per remote address (its users share it)
    per_user: int | None = None  # authenticated sessions per user
    handshake: float = 5.0  # the whole handshake, however slowly it trickles in
    idle: float | None = 600.0  # between two requests of a session that is not persistent


class Admission:
    """The counts behind ``Limits``; every method takes the one lock."""

    def __init__(self, limits: Limits, own_uid: int) -> None:
        self.limits = limits
        self.own_uid = own_uid
        self._lock = threading.Lock()
        self.total = 0
        self._per_peer: Counter = Counter()
        self._pending: Counter = Counter()
        self._users: dict[str, set] = {}

    def admit(self, peer: Peer) -> str | None:
        """Take a new connection from ``peer`` (pending until ``authenticated``), or say
        why not."""
        limits, key = self.limits, peer.key
        own = peer.uid == self.own_uid
        with self._lock:
            if self.total >= limits.max_clients + limits.reserve:
                return f"{self.total} connections: the hard limit"
            if self.total >= limits.max_clients and not own and self._per_peer[key]:
                return f"{self.total} connections, {self._per_peer[key]} of them from {peer}"
            cap = (limits.pending_own_uid if own else limits.pending_per_uid) if peer.local \
                else limits.pending_per_host
            if cap is not None and self._pending[key] >= cap:
                return f"{self._pending[key]} handshakes already under way from {peer}"
            self.total += 1
            self._per_peer[key] += 1
            self._pending[key] += 1
        return None

    def authenticated(self, peer: Peer, user: str, session: object) -> str | None:
        """The handshake of a connection from ``peer`` is over: count it as ``user``'s
        session, or say why not (the connection is then ended with ``release``)."""
        with self._lock:
            self._pending[peer.key] -= 1
            sessions = self._users.setdefault(user, set())
            cap = self.limits.per_user
            if cap is not None and len(sessions) >= cap:
                return f"{user} already has {len(sessions)} connections"
            sessions.add(session)
        return None

    def release(self, peer: Peer, user: str | None, session: object | None,
                pending: bool) -> None:
        """A connection admitted by ``admit`` ended."""
        with self._lock:
            self.total -= 1
            self._per_peer[peer.key] -= 1
            if not self._per_peer[peer.key]:
                del self._per_peer[peer.key]
            if pending:
                self._pending[peer.key] -= 1
            if not self._pending[peer.key]:
                del self._pending[peer.key]
            if user is not None and session is not None:
                sessions = self._users.get(user)
                if sessions is not None:
                    sessions.discard(session)
                    if not sessions:
                        del self._users[user]

    def sessions_of(self, user: str) -> list:
        with self._lock:
            return list(self._users.get(user, ()))


class Watch:
    """One connection's deadline; ``None`` while it has none (a master's link)."""

    def __init__(self, expire: Callable[[], None]) -> None:
        self.expire = expire
        self.deadline: float | None = None
        self.queued = False
        self.done = False


class Deadlines:
    """One thread that ends connections whose deadline has passed. It sleeps until the
    earliest deadline; a deadline moved later is found when the earlier one comes up."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Watch]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        threading.Thread(target=self._run, name="deadlines", daemon=True).start()

    def set(self, watch: Watch, seconds: float | None) -> None:
        """Give ``watch`` a deadline ``seconds`` from now (None: no deadline)."""
        with self._cond:
            watch.deadline = None if seconds is None else time.monotonic() + seconds
            if watch.deadline is not None and not watch.queued:
                watch.queued = True
                heapq.heappush(self._heap, (watch.deadline, next(self._seq), watch))
                if self._heap[0][2] is watch:
                    self._cond.notify()

    def cancel(self, watch: Watch) -> None:
        with self._cond:
            watch.done = True

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    self._cond.wait(self._heap[0][0] - time.monotonic() if self._heap else None)
                _, _, watch = heapq.heappop(self._heap)
                watch.queued = False
                if watch.done or watch.deadline is None:
                    continue
                if watch.deadline > time.monotonic():  # moved later meanwhile
                    watch.queued = True
                    heapq.heappush(self._heap, (watch.deadline, next(self._seq), watch))
                    continue
                watch.done = True
            watch.expire()
