"""Why a queued job may not be asked for yet, kept in step with every status change.

A queued job is *ready* (indexed by shape in the JobQueue, so the master asks for it)
unless it is held, one of its dependencies has not ended, or its array already runs as
many tasks as its %MAX allows. The per-user limits (issue 15) are not gates here: the
multiuser applies them (``qpy_multiuser/user_limits.py``) to the jobs the master asks for.

Dependencies: ``waiting`` maps a queued job to those of its dependencies that have not
ended (each with whether it must end done with exit 0), ``dependents`` is the reverse
index, so a job's end finds the jobs waiting for it at once. When a dependency ends
(``ended``, called from the records' one notification point of an end), each dependent
waits for one fewer, or (afterok, and it did not end done with exit 0) is to be undone
with the reason ``dependency N exited 3`` / ``dependency N ended killed``: the records
make that move, and its end in turn reaches that job's own dependents. A job that comes
back to the queue (requeued, or its start failed) waits again for those of its
dependencies that are live.

Arrays with %MAX: of an array's queued tasks only so many are *admitted* (ready as far as
the cap goes) that admitted and running tasks stay within %MAX. A task that starts goes
from admitted to running; one that ends or leaves the queue lets the next one in.

Everything here follows from the queued and running jobs in memory, so a failed
transaction simply rebuilds it (``rebuild``) after the records are taken back.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from qpy.model import Job
from qpy.states import DONE, QUEUE, RUNNING
from qpy_master.queue import JobQueue


@dataclass
class Cap:
    """One array's %MAX: its queued tasks by ID, those admitted, those running."""

    limit: int
    queued: dict[int, None] = field(default_factory=dict)
    admitted: set[int] = field(default_factory=set)
    running: set[int] = field(default_factory=set)


def failure(dep: Job) -> str | None:
    """Why an ended dependency fails ``afterok``, or None if it ended done with exit 0."""
    if dep.status != DONE:
        return f"dependency {dep.id} ended {dep.status}"
    if dep.signal is not None:
        return f"dependency {dep.id} ended by signal {dep.signal}"
    if dep.exit_code != 0:
        return f"dependency {dep.id} exited {dep.exit_code}"
    return None


def dependencies(job: Job) -> dict[int, bool]:
    """A job's dependencies, each with whether it must end done with exit 0."""
    return {**dict.fromkeys(job.after, False), **dict.fromkeys(job.afterok, True)}


class Gates:
    """Holds, pending dependencies and array caps of the queued jobs."""

    def __init__(self, queue: JobQueue, running: dict[int, Job]) -> None:
        self.queue, self.running = queue, running
        self.waiting: dict[int, dict[int, bool]] = {}
        self.dependents: dict[int, set[int]] = {}
        self.arrays: dict[int, Cap] = {}

    def ready(self, job: Job) -> bool:
        return not job.held and job.id not in self.waiting and (
            job.array_max is None or job.id in self.arrays[job.array_id].admitted)

    def cap(self, job: Job) -> Cap | None:
        """The %MAX of the job's array, if it has one."""
        return self.arrays.get(job.array_id) if job.array_max is not None else None

    # -- changes ---------------------------------------------------------------------------

    def added(self, job: Job) -> None:
        """A job that joins the queue (new, or queued again): it waits for those of its
        dependencies still live."""
        self._enqueue(job)
        self.refresh(job)

    def _enqueue(self, job: Job) -> None:
        """Count a queued job in: its pending dependencies, its array's queued tasks (an
        array may have had no live task until now)."""
        self._wait(job)
        cap = self._capped(job)
        if cap is not None:
            cap.queued[job.id] = None

    def refresh(self, job: Job) -> None:
        """A queued job's hold or dependencies changed: it is asked for, or no more."""
        cap = self.cap(job)
        if cap is not None:
            if job.held or job.id in self.waiting:
                cap.admitted.discard(job.id)
            self._refill(cap)
        self.queue.set_ready(job.id, self.ready(job))

    def moved(self, job: Job, old: str) -> None:
        """``job`` went from ``old`` to its status: follow it (its end reaches its
        dependents through ``ended``)."""
        cap = self.cap(job)
        if old == QUEUE:
            self._unwait(job)
            if cap is not None:
                cap.queued.pop(job.id, None)
                cap.admitted.discard(job.id)
        elif old == RUNNING and cap is not None:
            cap.running.discard(job.id)
        if job.status == RUNNING and cap is not None:
            cap.running.add(job.id)
        if job.status == QUEUE:
            self.added(job)
        elif cap is not None:
            self._refill(cap)

    # -- dependencies ----------------------------------------------------------------------

    def _wait(self, job: Job) -> None:
        pending = {dep: ok for dep, ok in dependencies(job).items()
                   if dep in self.queue or dep in self.running}
        if pending:
            self.waiting[job.id] = pending
            for dep in pending:
                self.dependents.setdefault(dep, set()).add(job.id)

    def _unwait(self, job: Job) -> None:
        for dep in self.waiting.pop(job.id, {}):
            same = self.dependents.get(dep)
            if same is not None:
                same.discard(job.id)
                if not same:
                    del self.dependents[dep]

    def ended(self, ended: Job) -> list[tuple[Job, str]]:
        """``ended`` is over: its dependents wait for one fewer; those it fails are
        returned, each with its reason (the records undo them)."""
        failed = []
        for job_id in sorted(self.dependents.pop(ended.id, ())):
            job = self.queue.get(job_id)
            pending = self.waiting.get(job_id)
            if job is None or pending is None:
                continue
            why = failure(ended) if pending.pop(ended.id) else None
            if why is not None:
                failed.append((job, why))
                continue
            if not pending:
                del self.waiting[job_id]
                self.refresh(job)
        return failed

    # -- arrays ----------------------------------------------------------------------------

    def _capped(self, job: Job) -> Cap | None:
        if job.array_max is None:
            return None
        return self.arrays.setdefault(job.array_id, Cap(job.array_max))

    def _refill(self, cap: Cap) -> None:
        """Admit the array's next eligible tasks while it has room under its %MAX."""
        room = cap.limit - len(cap.running) - len(cap.admitted)
        for job_id in cap.queued:
            if room <= 0:
                return
            job = self.queue.jobs[job_id]
            if job_id in cap.admitted or job.held or job_id in self.waiting:
                continue
            cap.admitted.add(job_id)
            self.queue.set_ready(job_id, True)
            room -= 1

    # -- from scratch ----------------------------------------------------------------------

    def rebuild(self) -> None:
        """Everything again from the queued and running jobs: at start-up, and after a
        failed transaction has taken the records back."""
        self.waiting, self.dependents, self.arrays = {}, {}, {}
        for job in self.running.values():
            cap = self._capped(job)
            if cap is not None:
                cap.running.add(job.id)
        queued = self.queue.ordered()
        for job in sorted(queued, key=lambda j: j.id):
            self._enqueue(job)
        self.queue.clear_ready()
        for cap in self.arrays.values():
            self._refill(cap)
        for job in queued:
            if job.array_max is None:
                self.queue.set_ready(job.id, self.ready(job))

    def pending(self, job_id: int) -> dict[int, bool]:
        """The dependencies a queued job still waits for."""
        return self.waiting.get(job_id, {})
