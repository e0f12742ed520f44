"""When to ask the multiuser for slots, and starting what it grants.

Anything that may let a job start (a submission, a job's end, ``continue``, a ``wake``
from the multiuser) calls ``poke``, in whichever thread it happens: the slot request is
sent from there at once, and its reply is handled in the link's reader thread as it
arrives, so no thread is woken on the way from "a core is free" to "the job starts".
One request is in flight at a time; a poke meanwhile is remembered and asked after it.
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

from qpy import trace
from qpy.model import Job
from qpy.states import RUNNING
from qpy_master import multinode
from qpy_master.multiuser_link import LinkDown, MultiuserLink
from qpy_master.records import Records

log = logging.getLogger("qpy.master.scheduler")


class SchedulerOwner(Protocol):
    """What the scheduler needs of the master (``Master``)."""

    lock: object
    paused: bool

    def wanted(self) -> tuple[list[dict], int]: ...

    def start(self, job: Job) -> None: ...


class Scheduler:
    """Releases to send, what the multiuser was told, and the request in flight."""

    def __init__(self, master: SchedulerOwner, records: Records) -> None:
        self.m, self.records = master, records
        self.link: MultiuserLink | None = None  # set once the master has made it
        self.release: list[int] = []
        self.told_queue = 0  # the queue size the multiuser last heard
        self.in_flight: list[int] | None = None  # the releases of the request in flight
        self.again = False
        self.stopped = False
        self.limit: str | None = None  # the user limit the multiuser last said holds the queue

    def poke(self) -> None:
        """Ask the multiuser now (or right after the request in flight)."""
        with self.m.lock:
            if self.stopped:
                return
            if self.in_flight is not None:
                self.again = True
                return
            want, queue_size = self.m.wanted()
            if not self.release and not want and queue_size == self.told_queue:
                return  # nothing to ask, and the multiuser knows the queue (killed jobs: not)
            self.in_flight, self.release = self.release, []
            msg = {"type": "slots", "release": self.in_flight, "want": want,
                   "queue_size": queue_size}
        trace.mark("master: slots asked")
        try:
            if self.link is None:
                raise LinkDown("not connected yet")
            self.link.request_async(msg, lambda reply: self._answered(reply, queue_size))
        except LinkDown:
            self._answered(None, queue_size)  # asked again once registered

    def _answered(self, reply: dict | None, queue_size: int) -> None:
        """Start what was granted; keep the releases if the request failed (a release
        for a job the hello left out is harmless, one lost would hold its core)."""
        trace.mark("master: slots answered")
        with self.m.lock:
            released, self.in_flight = self.in_flight or [], None
            again, self.again = self.again, False
            if reply is None or not reply.get("ok"):
                if reply is not None:
                    log.error("slot request refused: %s", reply.get("error"))
                self.release[:0] = released
                return
            grants = reply.get("grants") or []
            self.limit = reply.get("limit") if reply.get("waiting") else None
            self.told_queue = queue_size - len(grants)
            for grant in grants:
                again |= not self._launch(grant)
            again |= bool(grants and reply.get("more"))
        if again:
            self.poke()

    def _launch(self, grant: dict) -> bool:
        """Record the job as running, then start it: it can never run twice. False when
        the slot goes back at once (killed, paused, held or made to wait while the request
        was in flight)."""
        job = self.records.queue.get(grant.get("job"))
        if job is None or self.m.paused or job.id not in self.records.queue.ready:
            self.release.append(grant.get("job"))
            return False
        with self.records.transaction():
            self.records.move(job, RUNNING, node=grant["node"], address=grant.get("address"),
                              t_start=time.time())
            if "cores" in grant:  # a whole node: the job gets all of it (sub --exclusive),
                self.records.update(job, n_cores=grant["cores"], mem=grant["mem"],
                                    **multinode.grant_fields(grant))  # or all of several
        self.m.start(job)
        return True

    def freed(self, job: Job) -> None:
        """A job's slot is no longer used: release it with the next request."""
        self.release.append(job.id)
        self.poke()

    def stop(self) -> None:
        with self.m.lock:
            self.stopped = True
