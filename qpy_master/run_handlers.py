"""The handlers of runs, ends and waiting: wait, history, requeue.

``wait`` blocks its request's thread until the jobs end (``qpy_master.waiting``); the
client (``qpy/follow.py``) asks again, on a new connection if need be, for what it still
waits for, so a wait outlives a restart of the master.
"""

from __future__ import annotations

import time

from qpy import history_view, jsonout, selection, trace
from qpy.model import RUN_FIELDS
from qpy.server import BadRequest, NotFound, RequestError, Session
from qpy.states import FINISHED, QUEUE
from qpy.words import plural
from qpy_master.handler_args import selection_of
from qpy_master.master import Master

MAX_BLOCK = 30.0  # seconds one wait request blocks at most; the client asks again
NOTHING = "Nothing to do: required jobs not found."
# What a job queued again starts without: its last run's traces
FRESH = {"node": None, "address": None, "t_start": None, "t_end": None, "exit_code": None,
         "signal": None, "reason": None, "pid": None, "kill_requested": False, "cpu": None,
         "peak_mem": None, "nodes": None, "span": None}


def wait(m: Master, s: Session, msg: dict) -> dict:
    """The selected jobs that have ended, and those still queued or running, once all
    have ended or ``timeout`` seconds (at most MAX_BLOCK) have passed."""
    sel, timeout = selection_of(msg), msg["timeout"]
    if selection.is_empty(sel):
        raise BadRequest("wait needs job IDs, ranges, a status or 'all'")
    if not 0 <= timeout < float("inf"):
        raise BadRequest(f"timeout must be a number of seconds >= 0, not {timeout}")
    deadline = time.monotonic() + min(timeout, MAX_BLOCK)
    with m.lock:
        ids = [j.id for j in m.records.select(sel)]
        if not ids:
            raise NotFound(NOTHING)
        waiter = m.waiters.add(ids, m.records.live)
    try:
        while waiter.event.wait(max(deadline - time.monotonic(), 0.0)):
            trace.mark("master: wait woken")
            with m.lock:
                still = [i for i in ids if m.records.live(i)]
                if not still:
                    break
                waiter.renew(still)  # an end that was taken back: wait for it again
    finally:
        with m.lock:
            m.waiters.remove(waiter)
            jobs = list(m.records.select({"ids": ids}))
    trace.mark("master: wait answered")
    return {"jobs": [j.public() for j in jobs if j.status in FINISHED],
            "pending": [j.id for j in jobs if j.status not in FINISHED]}


def _going(m: Master, sel: dict, until: float | None) -> list[dict]:
    """The runs going on that ``sel`` and ``until`` select, as run records."""
    return [m.store.run_record(j) for j in sorted(m.records.running.values(), key=lambda j: j.id)
            if (selection.is_empty(sel) or selection.matches(sel, j.id, j.status, j.cwd))
            and (until is None or (j.t_start or 0) <= until)]


def history(m: Master, s: Session, msg: dict) -> dict:
    """Every run that ended (cleaned jobs' too), then every run going on: as the table
    of ``qpy history`` (the ended runs' lines are stored), or as the JSON array of the
    runs (SQLite writes the ended ones' objects, ``jsonout.SQL_RUN``): 100,000 runs must
    not cost a Python object per field."""
    sel, since, until, as_json = (selection_of(msg), msg.get("since"), msg.get("until"),
                                  msg.get("json"))
    with m.lock:
        ended = m.store.runs(sel, since, until, jsonout.SQL_RUN if as_json else "line")
        rows = m.store.runs(sel, since, until) if ended is None else []
        going = _going(m, sel, until)
    now = time.time()
    records = [dict(zip(RUN_FIELDS, row, strict=True)) for row in rows] + going
    if as_json:
        texts = (ended or []) + [jsonout.dumps(jsonout.run(r, now)) for r in records]
        return {"runs_json": "[" + ",".join(texts) + "]"}
    return {"table": history_view.LINE % history_view.HEADER + "".join(ended or [])
            + history_view.render(records, now)}


def requeue(m: Master, s: Session, msg: dict) -> dict:
    """Queue finished jobs again under their IDs, last in the queue as new jobs go;
    queued or running jobs named by ID are refused."""
    sel = selection_of(msg)
    with m.lock:
        for job_id in sel["ids"]:
            live = m.records.live(job_id)
            if live is not None:
                raise RequestError(f"job {job_id} is {live.status}: only finished jobs "
                                   "(done, killed, undone, lost) can be requeued")
        jobs = list(m.records.select(sel, FINISHED))
        if not jobs:
            raise NotFound(NOTHING)
        now = time.time()
        with m.records.transaction():
            for job in jobs:
                m.records.move(job, QUEUE, last=True, **FRESH, t_queue=now)
    m.schedule()
    return {"text": f"{plural(len(jobs))} queued again.\n", "requeued": [j.id for j in jobs]}


def make_table(m: Master) -> dict:
    """This module's part of the master's request table (``handlers.make_table``)."""

    def bind(fn):
        return lambda session, msg: fn(m, session, msg)

    return {"wait": bind(wait), "history": bind(history), "requeue": bind(requeue)}
