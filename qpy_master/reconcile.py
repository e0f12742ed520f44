"""Runs the master gave up on while their node was out of reach, and the truth about them
once the node is reached again.

When a node is declared down, the master cannot know what became of the jobs running
there: a cut network leaves them running, a start op may have gone into a session that
was already dead. It records them ``lost`` (or queues them again, ``--requeue``) and
remembers each such run here, in the store, so a restarted master still knows. The next
launcher on that node is asked about them in its first op (``sweep``'s ``ask``) and
answers from its slot file:

* the run ended there: the job gets that end (``lost`` → ``done``), and a requeued copy
  that has not started yet is withdrawn (``queue`` → ``done``); a copy already running
  again cannot be undone, so the job gets a note saying it ran twice;
* the start never reached the node: a ``lost`` job goes back to the queue;
* the run was still going (the launcher ends it now) or left no end: nothing changes;
* the job was started on that node again before the node told (the start op follows
  the question): the start is answered with the first run's end, or runs the job; the
  history keeps no ``lost`` run for a run that ended or never was.

The end stays in the node's slot until the master has recorded it (then ``forget``), so a
master that dies in between asks again.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable

from qpy.model import Job
from qpy.states import KILLED, LOST, QUEUE, RUNNING, UNDONE
from qpy.words import ended_by
from qpy_master.ends import end_of
from qpy_master.launcher import ended_by_itself
from qpy_master.records import Records

log = logging.getLogger("qpy.master.reconcile")


def _exit_words(event: dict) -> str:
    """How a run ended, from the launcher's ``ended`` event (which has an exit or a
    signal unless the run could not start)."""
    if event.get("error"):
        return f"it could not start: {event['error']}"
    return ended_by(event.get("exit"), event.get("signal"))


class Reconciler:
    """The runs waiting for their node's word, and what to do with that word."""

    def __init__(self, records: Records, tell: Callable[[str, dict], None],
                 wake: Callable[[], None]) -> None:
        self.records, self.tell, self.wake = records, tell, wake

    def give_up(self, job: Job, node: str) -> None:
        """``job``'s run on ``node`` has an unknown fate from now on."""
        self.records.store.unsettle(job.id, node, job.address)

    def waiting_on(self, node: str) -> list[int]:
        return [job for job, name, _ in self.records.store.unsettled() if name == node]

    def remove_queued(self, job: Job, now: float) -> None:
        """``qpy kill`` of a queued job: ``undone``, unless it is a requeued copy whose
        first run may have happened (its node has not told yet): that one is ``killed``."""
        node = self.records.store.unsettled_node(job.id)
        if node is None:
            self.records.move(job, UNDONE, t_end=now)
        else:
            self.records.move(job, KILLED, kill_requested=True, node=node, t_end=now,
                              reason=f"killed in the queue; its run on {node} was given up "
                                     "on and its end is not known yet")

    def nodes(self) -> dict[str, str | None]:
        """Nodes that owe an answer, with an address to reach them by."""
        return {name: address for _, name, address in self.records.store.unsettled()}

    def settle(self, node: str, event: dict) -> bool:
        """Apply what ``node``'s launcher says of a run given up on (a ``fate``, or the
        ``ended``/``lost`` of a run it still watched); False if none was waited for."""
        job_id = event.get("job")
        if not isinstance(job_id, int):
            return False
        with self.records.transaction():
            if not self.records.store.settle(job_id, node):
                return False
            job = self.records.get(job_id)
            forget = job is None or self._apply(job, node, event)
        if forget:
            self.tell(node, {"op": "forget", "job": job_id})
        self.wake()  # a job queued again, or a queue shorter by a withdrawn copy
        return True

    def _apply(self, job: Job, node: str, event: dict) -> bool:
        """Fix the record; whether the node may now free the run's slot."""
        ran = event.get("ev") != "fate" or bool(event.get("ran"))
        ended = "t_end" in event and ended_by_itself(event)
        if job.status == RUNNING and job.node == node:  # started there again before the
            if ended or not ran:  # node told: its start op follows and is answered with
                self.records.store.drop_lost_run(job.id)  # this end, or is its one run
            return False  # the slot is the new start's: no forget
        if not ran:
            if job.status == LOST:
                log.warning("job %d never started on %s: queued again", job.id, node)
                self.records.move(job, QUEUE, node=None, address=None, t_start=None,
                                  t_end=None, pid=None, reason=None, nodes=None, span=None)
                self._note(job, f"its start never reached {node}: queued again")
            if job.status == QUEUE:  # the run recorded as lost never happened
                self.records.store.drop_lost_run(job.id)
            return True
        if not ended:
            if job.status in (LOST, QUEUE):
                self._note(job, f"{node} was reached again: its run there left no end")
            return True
        if job.status in (LOST, QUEUE):
            self._record_end(job, node, event)
        elif job.status == KILLED and job.t_start is None:  # killed in the queue meanwhile
            status, fields = end_of(dataclasses.replace(job, node=node, kill_requested=False),
                                    event)
            fields.update(t_start=event.get("t"), node=node)
            self.records.update(job, **{k: fields[k] for k in (
                "exit_code", "signal", "t_start", "cpu", "peak_mem")})
            self._replace_run(job, status=status, **fields)
            self._note(job, f"{node} was reached again: its run there had ended "
                            f"({_exit_words(event)})")
        elif job.node != node:  # (on this node, the end recorded is this run's own)
            log.error("job %d ran twice: its run on %s, given up on, ended too", job.id, node)
            self._note(job, f"it ran twice: the run on {node} it had been given up on "
                            f"ended too ({_exit_words(event)})")
        return True

    def _record_end(self, job: Job, node: str, event: dict) -> None:
        """The run given up on had ended: the job gets that end (a queued copy is
        withdrawn), and the history gets that run in place of the lost one."""
        log.warning("job %d had ended on %s (%s): recorded", job.id, node, _exit_words(event))
        was = job.status
        status, fields = end_of(dataclasses.replace(job, node=node), event)
        fields.update(t_start=event.get("t") or job.t_start, node=node,
                      t_end=fields["t_end"] or time.time())
        self.records.move(job, status, **fields)
        self._replace_run(job)
        what = "recorded as lost" if was == LOST else "queued again"
        self._note(job, f"{node} was reached again: the run it had been {what} for had "
                        f"ended there ({_exit_words(event)})")

    def _replace_run(self, job: Job, **fields: object) -> None:
        """The history's ``lost`` run of ``job`` becomes the run as it really ended (the
        job as it is now, or ``fields``)."""
        self.records.store.drop_lost_run(job.id)
        self.records.add_run(job, **fields)

    def _note(self, job: Job, text: str) -> None:
        self.records.add_note(job.id, time.time(), text)
