"""The master's job records: the store, and the live jobs in memory beside it.

Queued jobs (in run order) and running jobs are also kept in memory, so scheduling and
selections never scan the store. ``move`` is the one place a job changes status: it
stores the change, then keeps the queue, the running set and the gates (holds,
dependencies, array caps) in step. Every end is announced once, to the ``on_end`` hooks:
the dependencies are the first (an end undoes the ``afterok`` dependents it fails, down
their chains), ``qpy wait`` another. Inside a failed transaction all of it is taken back
together.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Callable, Iterator

from qpy import history_view, selection
from qpy.model import Job
from qpy.states import FINISHED, QUEUE, RUNNING, UNDONE
from qpy_master.gates import Gates, failure
from qpy_master.queue import JobQueue, Moves
from qpy_master.store import Store

REBUILD_FROM = 256  # holding more jobs than this at once rebuilds the gates in one pass


class Records:
    """Every job of one user: stored, and indexed in memory while live."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.queue = JobQueue()
        queued, running = store.live()
        for job, qpos in queued:
            self.queue.push(job, qpos, ready=False)
        self.running: dict[int, Job] = {job.id: job for job in running}
        self.gates = Gates(self.queue, self.running)
        self.gates.rebuild()
        # Dependents that can never run, to be undone before the move that doomed them
        # returns (a worklist, not recursion: an afterok chain may be 100,000 long).
        self._doomed: list[tuple[Job, str]] = []
        # called with each job that has just ended (done, killed, undone or lost), inside
        # the transaction that records it, under the master's lock: the one notification
        # point of an end (its dependents are resolved here, ``qpy wait`` wakes here)
        self.on_end: list[Callable[[Job], None]] = [self._resolve]
        # called with each job whose status has just changed, likewise: interactive
        # sessions' waiters and idle reports (qpy_master/sessions.py)
        self.on_move: list[Callable[[Job], None]] = []

    def transaction(self) -> contextlib.AbstractContextManager[None]:
        """Group changes; if one fails, the store and the jobs in memory are taken back,
        and the gates rebuilt from them last."""
        return self.store.transaction(first_undo=self.gates.rebuild)

    def add(self, jobs: list[Job], env: dict[str, str]) -> None:
        """Record new queued jobs in this order (their IDs are set here, consecutive),
        each where its priority puts it; an array's tasks take its first task's ID as
        the array's. Submission environments are stored once however many jobs share
        them."""
        with self.transaction():
            env_id = self.store.env_id(env)
            array_id = None
            for job in jobs:
                job.env_id = env_id
                if job.array_index is not None:
                    job.array_id = array_id
                pos, moves = self.queue.place(job.priority)
                self._store_moves(moves)
                job.id = self.store.insert(job, pos)
                if job.array_index is not None and array_id is None:
                    array_id = job.id
                    self.store.update(job, array_id=job.id)  # the first task names it
                self.queue.push(job, pos, ready=False)
                self.store.on_rollback(lambda job=job: self.queue.remove(job.id))
                self.gates.added(job)

    def move(self, job: Job, status: str, *, last: bool = False, **fields: object) -> None:
        """Change a job's status (and the fields that change with it), in the store and
        in memory at once. A run that ends is kept for history; a job queued again goes
        to the head of the queue, or with ``last`` where a new submission of its priority
        would go. A job that ends undoes the dependents it fails, and theirs."""
        with self.transaction():
            try:
                self._move(job, status, last, fields)
                while self._doomed:
                    dependent, why = self._doomed.pop()
                    if dependent.status == QUEUE:  # once, if two ends doomed it
                        self._move(dependent, UNDONE, False,
                                   {"reason": why, "t_end": time.time()})
            finally:
                self._doomed.clear()

    def _move(self, job: Job, status: str, last: bool, fields: dict) -> None:
        old = job.status
        if job.held:  # a hold is on a queued job only: killed or started, it is gone
            fields = {**fields, "held": False}
        self.store.transition(job, status, **fields)
        self._leave(job, old)
        self._enter(job, status, last)
        self.gates.moved(job, old)
        for hook in self.on_move:
            hook(job)
        if status in FINISHED:
            if old == RUNNING:
                self.add_run(job)
            for hook in self.on_end:
                hook(job)
        elif status == QUEUE and old in FINISHED:  # requeued: its dependencies hold again
            why = self._failed_dependency(job)
            if why is not None:
                self._doomed.append((job, why))

    def _resolve(self, ended: Job) -> None:
        """The first ``on_end`` hook: the dependents of a job that ended wait for one
        fewer, or can now never run (undone by ``move``)."""
        self._doomed += self.gates.ended(ended)

    def _failed_dependency(self, job: Job) -> str | None:
        """Why a requeued job can never run: the first of its ``afterok`` dependencies
        that has ended otherwise than done with exit 0 (a cleaned one counts no more)."""
        ended = [dep for dep in job.afterok if self.live(dep) is None]
        found = self.store.get_many(ended) if ended else {}
        return next((why for dep in sorted(found) if (why := failure(found[dep]))), None)

    def add_run(self, job: Job, **fields: object) -> None:
        """Keep a run that ended, with its line of ``qpy history``: the job as it is, or
        with ``fields`` (status, reason, t_end) for a run that ended without ending the
        job (its node failed and it is queued again)."""
        run = self.store.run_record(job, **fields)
        self.store.add_run(run, history_view.render([run], 0.0))

    def update(self, job: Job, **fields: object) -> None:
        """Change fields other than the status."""
        self.store.update(job, **fields)

    def hold(self, jobs: list[Job], held: bool) -> None:
        """Keep queued jobs from starting, or let them go (many at once: the gates are
        then rebuilt in one pass rather than job by job)."""
        with self.transaction():
            for job in jobs:
                self.store.update(job, held=held)
            if len(jobs) > REBUILD_FROM:
                self.gates.rebuild()
            else:
                for job in jobs:
                    self.gates.refresh(job)

    def _leave(self, job: Job, status: str) -> None:
        if status == QUEUE:
            pos = self.queue.qpos[job.id]
            self.queue.remove(job.id)
            self.store.on_rollback(lambda: self.queue.push(job, pos))
        elif status == RUNNING:
            del self.running[job.id]
            self.store.on_rollback(lambda: self.running.__setitem__(job.id, job))

    def _enter(self, job: Job, status: str, last: bool) -> None:
        if status == QUEUE:
            if last:  # requeued: placed as a new job of its priority
                pos, moves = self.queue.place(job.priority)
                self._store_moves(moves)
            else:  # back from a run that never happened or a failed node: first
                pos = self.queue.head()
            self.queue.push(job, pos, ready=False)
            self.store.set_qpos([(pos, job.id)])
            self.store.on_rollback(lambda: self.queue.remove(job.id))
        elif status == RUNNING:
            self.running[job.id] = job
            self.store.on_rollback(lambda: self.running.pop(job.id, None))

    def _store_moves(self, moves: Moves) -> None:
        """Store new queue positions; taken back in memory if the transaction fails."""
        new, old = moves
        if new:
            self.store.set_qpos(new)
            self.store.on_rollback(lambda: self.queue.reposition(old))

    # -- finding jobs ------------------------------------------------------------------------

    def live(self, job_id: int) -> Job | None:
        return self.queue.get(job_id) or self.running.get(job_id)

    def on_node(self, node: str) -> list[Job]:
        return [j for j in self.running.values() if j.node == node]

    def live_matches(self, sel: dict) -> list[Job]:
        """Queued and running jobs in a validated selection, found without the store: IDs
        and short ranges are looked up (``qpy kill 5`` costs the same with 100,000 jobs
        queued), the rest is searched for among the live jobs."""
        found = {i: job for i in sel["ids"] if (job := self.live(i)) is not None}
        count = len(self.queue) + len(self.running)
        for low, high in sel["ranges"]:
            if high - low < count:
                found.update((i, job) for i in range(low, high + 1)
                             if (job := self.live(i)) is not None)
            else:
                found.update((j.id, j) for j in self._live_jobs() if low <= j.id <= high)
        if sel["statuses"] or sel["dirs"] or sel["all"] or sel.get("held"):
            found.update((j.id, j) for j in self._live_jobs()
                         if selection.matches(sel, j.id, j.status, j.cwd, j.held))
        return [found[i] for i in sorted(found)]

    def _live_jobs(self) -> Iterator[Job]:
        return itertools.chain(self.queue.jobs.values(), self.running.values())

    def select(self, sel: dict, statuses: tuple[str, ...] = ()) -> list[Job]:
        return self.store.select(sel, statuses)

    def get(self, job_id: int) -> Job | None:
        """The record of any job, live ones being the objects in memory."""
        return self.live(job_id) or self.store.get(job_id)

    def find(self, ids: list[int]) -> dict[int, Job]:
        """The records of those of ``ids`` that exist, live ones from memory."""
        found = {i: job for i in ids if (job := self.live(i)) is not None}
        rest = [i for i in ids if i not in found]
        return {**self.store.get_many(rest), **found} if rest else found

    def delete(self, ids: list[int]) -> None:
        """Forget finished jobs (``clean``)."""
        with self.transaction():
            self.store.delete(ids)

    def reorder(self, ids: list[int], target: str) -> tuple[str, bool]:
        """``ctrlQueue jump``: the message, and whether the queue changed."""
        with self.transaction():
            text, moves = self.queue.jump(ids, target)
            self._store_moves(moves)
        return text, bool(moves[0])

    # -- notes -------------------------------------------------------------------------------

    def add_note(self, job_id: int, t: float, text: str) -> None:
        self.store.add_note(job_id, t, text)

    def notes(self, job_id: int) -> list[tuple[float, str]]:
        return self.store.notes(job_id)

    def jobs_with_notes(self) -> list[int]:
        return self.store.jobs_with_notes()
