"""The master's job records: the store, and the live jobs in memory beside it.

Queued jobs (in run order) and running jobs are also kept in memory, so scheduling and
selections never scan the store. ``move`` is the one place a job changes status: it
stores the change, then keeps the queue and the running set in step; inside a failed
transaction all of it is taken back together.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from qpy import history_view, selection
from qpy.model import Job
from qpy.states import FINISHED, QUEUE, RUNNING
from qpy_master.queue import JobQueue
from qpy_master.store import Store

HEAD = 0  # queue position of a job that goes back to the queue: it runs first


class Records:
    """Every job of one user: stored, and indexed in memory while live."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.queue = JobQueue()
        self.running: dict[int, Job] = {}
        # called with each job that has just ended (done, killed, undone or lost), inside
        # the transaction that records it, under the master's lock: ``qpy wait`` wakes here
        self.on_end: list[Callable[[Job], None]] = []
        # called with each job whose status has just changed, likewise: interactive
        # sessions' waiters and idle reports (qpy_master/sessions.py)
        self.on_move: list[Callable[[Job], None]] = []
        queued, running = store.live()
        for job, qpos in queued:
            self.queue.push(job, qpos)
        self.running = {job.id: job for job in running}

    def transaction(self) -> contextlib.AbstractContextManager[None]:
        return self.store.transaction()

    def add(self, job: Job, env: dict[str, str]) -> None:
        """Record a new queued job (its ID is set here) and queue it last; submission
        environments are stored once however many jobs share them."""
        with self.transaction():
            job.env_id = self.store.env_id(env)
            qpos = self.queue.next_pos
            job.id = self.store.insert(job, qpos)
            self.queue.push(job, qpos)
            self.store.on_rollback(lambda: self.queue.remove(job.id))

    def move(self, job: Job, status: str, *, last: bool = False, **fields: object) -> None:
        """Change a job's status (and the fields that change with it), in the store and
        in memory at once. A run that ends is kept for history; a job queued again goes
        to the head of the queue, or with ``last`` where a new submission would go."""
        with self.transaction():
            old = job.status
            self.store.transition(job, status, **fields)
            self._leave(job, old)
            self._enter(job, status, last)
            for hook in self.on_move:
                hook(job)
            if status in FINISHED:
                if old == RUNNING:
                    self.add_run(job)
                for hook in self.on_end:
                    hook(job)

    def add_run(self, job: Job, **fields: object) -> None:
        """Keep a run that ended, with its line of ``qpy history``: the job as it is, or
        with ``fields`` (status, reason, t_end) for a run that ended without ending the
        job (its node failed and it is queued again)."""
        run = self.store.run_record(job, **fields)
        self.store.add_run(run, history_view.render([run], 0.0))

    def update(self, job: Job, **fields: object) -> None:
        """Change fields other than the status."""
        self.store.update(job, **fields)

    def _leave(self, job: Job, status: str) -> None:
        if status == QUEUE:
            pos = self.queue.qpos[job.id]
            self.queue.remove(job.id)
            self.store.on_rollback(lambda: self.queue.push(job, pos))
        elif status == RUNNING:
            del self.running[job.id]
            self.store.on_rollback(lambda: self.running.__setitem__(job.id, job))

    def _enter(self, job: Job, status: str, last: bool = False) -> None:
        if status == QUEUE:
            pos = self.queue.push(job, None if last else HEAD)
            self.store.set_qpos([(pos, job.id)])
            self.store.on_rollback(lambda: self.queue.remove(job.id))
        elif status == RUNNING:
            self.running[job.id] = job
            self.store.on_rollback(lambda: self.running.pop(job.id, None))

    # -- finding jobs ------------------------------------------------------------------------

    def live(self, job_id: int) -> Job | None:
        return self.queue.get(job_id) or self.running.get(job_id)

    def on_node(self, node: str) -> list[Job]:
        return [j for j in self.running.values() if j.node == node]

    def live_matches(self, sel: dict) -> list[Job]:
        """Queued and running jobs in a validated selection, found without the store."""
        live = {**self.queue.jobs, **self.running}
        found: dict[int, Job] = {i: live[i] for i in sel["ids"] if i in live}
        for low, high in sel["ranges"]:
            ids = range(low, high + 1) if high - low < len(live) else list(live)
            found.update({i: live[i] for i in ids if i in live and low <= i <= high})
        if sel["statuses"] or sel["dirs"] or sel["all"]:
            found.update({j.id: j for j in live.values()
                          if selection.matches(sel, j.id, j.status, j.cwd)})
        return [found[i] for i in sorted(found)]

    def select(self, sel: dict, statuses: tuple[str, ...] = ()) -> Iterator[Job]:
        return self.store.select(sel, statuses)

    def get(self, job_id: int) -> Job | None:
        """The record of any job, live ones being the objects in memory."""
        return self.live(job_id) or self.store.get(job_id)

    def delete(self, ids: list[int]) -> None:
        """Forget finished jobs (``clean``)."""
        with self.transaction():
            self.store.delete(ids)

    def reorder(self, ids: list[int], target: str) -> tuple[str, bool]:
        """``ctrlQueue jump``: the message, and whether the queue changed."""
        with self.transaction():
            text, order = self.queue.jump(ids, target)
            self.store.set_qpos(order)
        return text, bool(order)

    # -- notes -------------------------------------------------------------------------------

    def add_note(self, job_id: int, t: float, text: str) -> None:
        self.store.add_note(job_id, t, text)

    def notes(self, job_id: int) -> list[tuple[float, str]]:
        return self.store.notes(job_id)

    def jobs_with_notes(self) -> list[int]:
        return self.store.jobs_with_notes()
