"""When to ask the multiuser for slots, and starting what it grants.

Anything that may let a job start (a submission, a job's end, ``continue``, a ``wake``
from the multiuser) calls ``poke``, in whichever thread it happens: the slot request is
sent from there at once, and its reply is handled in the link's reader thread as it
arrives, so no thread is woken on the way from "a core is free" to "the job starts".
One request is in flight at a time; a poke meanwhile is remembered and asked after it.

A job's end does not always wait for the multiuser: while it has said that a freed slot
would go to this user anyway (``chain``: nobody else has jobs queued, no limit holds the
user), the next ready job that fits the slot is recorded and started in it at once
(``successor``), and the next request tells the multiuser (``chained``). The multiuser takes
that permission back (an ``unchain`` event) the moment another user queues a job or the
pool changes; a chain made before that event arrives counts as made before the change.
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
    nodes: dict[str, dict]

    def wanted(self) -> tuple[list[dict], int]: ...

    def start(self, job: Job) -> None: ...


class Scheduler:
    """Releases to send, what the multiuser was told, and the request in flight."""

    def __init__(self, master: SchedulerOwner, records: Records) -> None:
        self.m, self.records = master, records
        self.link: MultiuserLink | None = None  # set once the master has made it
        self.release: list[int] = []
        self.chained: list[dict] = []  # jobs started in ended jobs' slots, to be told
        self.told_queue = 0  # the queue size the multiuser last heard
        self.in_flight: dict | None = None  # the request in flight
        self.asking: set[int] = set()  # the jobs it asks for (never chained meanwhile)
        self.chain: int | None = None  # the multiuser's permission to chain, by its epoch
        self.unchained = 0  # the epoch of the last permission it took back
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
            if not self.release and not self.chained and not want \
                    and queue_size == self.told_queue:
                return  # nothing to ask, and the multiuser knows the queue (killed jobs: not)
            msg = self.in_flight = {"type": "slots", "release": self.release, "want": want,
                                    "queue_size": queue_size,
                                    **({"chained": self.chained} if self.chained else {})}
            self.release, self.chained = [], []
            self.asking = {job for group in want for job in group["jobs"]}
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
            asked, self.in_flight, self.asking = self.in_flight or {}, None, set()
            again, self.again = self.again, False
            if reply is None or not reply.get("ok"):
                if reply is not None:
                    log.error("slot request refused: %s", reply.get("error"))
                self.release[:0] = asked.get("release", [])
                self.chained[:0] = asked.get("chained", [])
                self.chain = None
                return
            self.chain = reply.get("chain")
            grants = reply.get("grants") or []
            self.limit = reply.get("limit") if reply.get("waiting") else None
            self.told_queue = queue_size - len(grants)
            again |= self._start_granted(grants)
            again |= bool(grants and reply.get("more"))
        if again:
            self.poke()

    def _start_granted(self, grants: list[dict]) -> bool:
        """Record every granted job as running, in one transaction, then start them: none
        can run twice or start unrecorded. A grant whose job may no longer start (killed,
        paused, held or made to wait while the request was in flight) goes back at once,
        and so do all of them if the store fails. Whether any went back."""
        try:
            with self.records.transaction():
                taken = [job for job in map(self._record, grants) if job is not None]
        except Exception:  # the link's reader thread must live on: the slots go back
            log.exception("could not record %d granted jobs as running", len(grants))
            taken = []
        self.release += [g["job"] for g in grants if g["job"] not in {j.id for j in taken}]
        for job in taken:
            self.m.start(job)
        return len(taken) < len(grants)

    def _record(self, grant: dict) -> Job | None:
        """Record a granted job as running (in the caller's transaction), if it may
        still start."""
        job = self.records.queue.get(grant.get("job"))
        if job is None or self.m.paused or job.id not in self.records.queue.ready:
            return None
        self.records.move(job, RUNNING, node=grant["node"], address=grant.get("address"),
                          t_start=time.time())
        if "cores" in grant:  # a whole node: the job gets all of it (sub --exclusive),
            self.records.update(job, n_cores=grant["cores"], mem=grant["mem"],
                                **multinode.grant_fields(grant))  # or all of several
        return job

    def freed(self, job: Job, successor: Job | None = None) -> None:
        """A job's slot is no longer used: released with the next request, unless its
        ``successor`` (recorded with the end) starts in it: then that request tells the
        multiuser so, after the start (one request is in flight at a time, so under load
        one tells of many)."""
        if successor is None:
            self.release.append(job.id)
        else:
            self.m.start(successor)
        self.poke()

    def successor(self, ended: Job) -> Job | None:
        """The next ready job, recorded as running in ``ended``'s slot (in the caller's
        transaction, with the end), if it is what the multiuser would grant: the
        permission holds, the job needs no more cores or memory than the slot has and
        nothing else of its node (attributes: none, or the same), and the node is still
        up and not drained. Whole-node, multi-node and interactive jobs ask, and so
        does a job asked for by the request in flight (the multiuser may grant it too)."""
        if self.chain is None or self.chain < self.unchained or self.m.paused \
                or ended.kind or ended.exclusive or ended.span:
            return None
        job = self.records.queue.first_ready()
        node = self.m.nodes.get(ended.node) or {}
        if job is None or job.id in self.asking or job.kind or job.exclusive \
                or job.n_nodes > 1 \
                or job.n_cores > ended.n_cores or job.mem > ended.mem \
                or job.attr not in (None, ended.attr) or not node.get("up") \
                or node.get("state") != "up" or node.get("drain_since") is not None:
            return None
        trace.mark("master: chained")
        if self._record({"job": job.id, "node": ended.node, "address": ended.address}):
            self.chained.append({"ended": ended.id, "job": job.id, "node": ended.node,
                                 "cores": job.n_cores, "mem": job.mem})
            self.records.store.on_rollback(self.chained.pop)
            return job
        return None

    def unchain(self, epoch: int) -> None:
        """The multiuser took the permission to chain back (``epoch``: when)."""
        with self.m.lock:
            self.unchained = max(self.unchained, epoch)

    def registering(self) -> None:
        """A new link: what the last multiuser allowed holds no more, and what it was
        to be told is in the hello (the running jobs)."""
        self.chain, self.unchained, self.chained = None, 0, []

    def stop(self) -> None:
        with self.m.lock:
            self.stopped = True
