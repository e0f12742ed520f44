"""``qpy wait`` in the master: requests that block until jobs end, woken by the end itself.

A request registers the IDs it still waits for. ``Waiters.ended`` is a hook of
``Records.move`` (called under the master's lock as each end is recorded): it strikes the
job off every waiter and wakes those with nothing left. Nothing polls: the request's
thread sleeps on an Event until then, or until its time is up.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

from qpy.model import Job


class Waiter:
    """The jobs one request still waits for, and the Event that wakes it."""

    def __init__(self, pending: Iterable[int]) -> None:
        self.pending = set(pending)
        self.event = threading.Event()
        if not self.pending:
            self.event.set()

    def renew(self, pending: Iterable[int]) -> None:
        """Wait again for jobs that are still live (an end whose transaction failed)."""
        self.pending = set(pending)
        if self.pending:
            self.event.clear()


class Waiters:
    """The blocked ``wait`` requests of one master. Every method runs under its lock."""

    def __init__(self) -> None:
        self._waiting: set[Waiter] = set()

    def add(self, ids: Iterable[int], live: Callable[[int], object]) -> Waiter:
        waiter = Waiter(i for i in ids if live(i))
        self._waiting.add(waiter)
        return waiter

    def remove(self, waiter: Waiter) -> None:
        self._waiting.discard(waiter)

    def ended(self, job: Job) -> None:
        """The notification point: ``job`` has just ended (done, killed, undone, lost)."""
        for waiter in self._waiting:
            if job.id in waiter.pending:
                waiter.pending.discard(job.id)
                if not waiter.pending:
                    waiter.event.set()
