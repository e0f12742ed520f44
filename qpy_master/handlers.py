"""One handler per CLI request: check, change (store first), reply.

Replies carry ``text`` for the user. A refusal raises RequestError, which the server sends
as an error reply and the CLI prints on stderr with ``qpy:``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from qpy import config
from qpy.server import BadRequest, NotFound, RequestError, Session
from qpy.states import FINISHED, QUEUE, RUNNING, UNDONE
from qpy.words import plural
from qpy_master import command_server, embedded, notify, run_handlers, session_requests, submit, why
from qpy_master.handler_args import ask_multiuser, refuse_if_removed
from qpy_master.handler_args import selection_of as _selection
from qpy_master.master import Master


def sub(m: Master, s: Session, msg: dict) -> dict:
    """One job, or an array's tasks."""
    return _submit(m, msg, [msg])


def bulk(m: Master, s: Session, msg: dict) -> dict:
    """A bulk file's jobs, one per line, in one request: all of them or none."""
    if not msg["jobs"]:
        raise BadRequest("no jobs to submit")
    return _submit(m, msg, msg["jobs"])


def _submit(m: Master, msg: dict, specs: list[dict]) -> dict:
    """Check every job of the request, then store them all in one transaction, with
    consecutive IDs in the order asked for."""
    refuse_if_removed(m, " (jobs already queued wait until access returns)")
    with m.lock:
        jobs = submit.new_jobs(specs, msg, m.settings, m.nodes)
        failed = submit.dependencies([(job, spec.get("where")) for job, spec in jobs],
                                     m.records.find)
        try:
            with m.records.transaction():
                m.records.add([job for job, _ in jobs], msg["env"])
                for index, (job, spec) in enumerate(jobs):
                    _copy_script(m, job, spec)
                    if index in failed:
                        m.records.move(job, UNDONE, reason=failed[index], t_end=time.time())
        except OSError as exc:
            raise RequestError(f"cannot copy the script: {exc.strerror}: {exc.filename}") \
                from None
    m.schedule()
    first, last = jobs[0][0].id, jobs[-1][0].id
    text = f"Job {first} received.\n" if first == last else f"Jobs {first}-{last} received.\n"
    reply = {"text": text, "job": first, "last": last}
    if msg.get("records"):
        with m.lock:
            queue = m.records.queue
            reply["jobs"] = [job.public(queue.rank(job.id) if job.id in queue else None)
                             for job, _ in jobs]
    mailed = [job.id for job, _ in jobs if job.mail]
    warning = notify.no_mail_warning(mailed[0]) if mailed else None
    return {**reply, "warning": warning} if warning else reply


def _copy_script(m: Master, job, spec: dict) -> None:
    """Copy a new job's script, if it asks for that (or copyScripts does)."""
    copy = spec["copy"] if spec["copy"] is not None else m.settings["copyScripts"]
    index = spec.get("script_index")
    if copy and spec.get("argv") and isinstance(index, int):
        m.records.update(job, **submit.copy_script(m.home / "scripts", job, spec["argv"],
                                                   index))


def _queue_only(sel: dict) -> bool:
    """Whether a selection asks for queued jobs only ('queue', 'held'): those are listed
    in the order they will start."""
    return (not (sel["ids"] or sel["ranges"] or sel["dirs"] or sel["all"])
            and set(sel["statuses"]) <= {QUEUE} and bool(sel["statuses"] or sel["held"]))


def _listed(m: Master, sel: dict) -> list[dict]:
    """The selected jobs' records, a queued one with its place in the queue."""
    queue = m.records.queue
    if _queue_only(sel):
        return [job.public(n) for n, job in enumerate(queue.ordered(), 1)
                if sel["statuses"] or job.held]
    return [j.public(queue.rank(j.id) if j.id in queue else None)
            for j in m.records.select(sel)]


def check(m: Master, s: Session, msg: dict) -> dict:
    sel = _selection(msg)
    with m.lock:
        jobs = _listed(m, sel)
        fmt = m.settings["checkFMT"]
        if "%K" in fmt:
            for job in jobs:
                notes = m.records.notes(job["id"])
                job["notes"] = "".join(_note_text(t, text) for t, text in notes) or None
        return {"jobs": jobs, "fmt": fmt, "colour": m.settings["colour"],
                "scheme": m.settings["coloursScheme"], "paused": m.paused,
                "limit": m.scheduler.limit if len(m.records.queue) else None}


def kill(m: Master, s: Session, msg: dict) -> dict:
    sel = _selection(msg)
    with m.lock:
        targets = m.records.live_matches(sel)
        queued = [j for j in targets if j.status == QUEUE]
        running = [j for j in targets if j.status == RUNNING]
        if not targets:
            raise NotFound("Nothing to do: required jobs not found.")
        now = time.time()
        with m.records.transaction():
            for job in queued:
                m.reconciler.remove_queued(job, now)
        for job in running:
            m.kill_running(job)
    if queued:  # the multiuser hears the queue is shorter (a minimum held is lent), and
        m.schedule()  # dependents of the jobs undone may start now
    text = ""
    if queued:
        text += f"{plural(len(queued))} removed from the queue.\n"
    if running:
        text += f"{plural(len(running))} will be killed.\n"
    return {"text": text, "undone": [j.id for j in queued], "killing": [j.id for j in running]}


def hold(m: Master, s: Session, msg: dict) -> dict:
    """``hold`` and ``release``: queued jobs kept from starting, or let go. A job named
    by its ID must be queued; ranges and words take the queued jobs among them."""
    sel, held = _selection(msg), msg["held"]
    verb = "held" if held else "released"
    with m.lock:
        named = m.records.find(sel["ids"])
        for job_id in sel["ids"]:
            job = named.get(job_id)
            if job is not None and job.status != QUEUE:
                raise RequestError(f"job {job_id} is {job.status}, not queued: only queued "
                                   f"jobs can be {verb}")
        targets = [j for j in m.records.live_matches(sel) if j.status == QUEUE]
        if not targets:
            raise NotFound("Nothing to do: required jobs not found.")
        m.records.hold(targets, held)
    m.schedule()  # released jobs may start; held ones leave the queue the multiuser hears of
    return {"text": f"{plural(len(targets))} {verb}.\n", "jobs": [j.id for j in targets]}


def clean(m: Master, s: Session, msg: dict) -> dict:
    sel = _selection(msg)
    with m.lock:
        jobs = list(m.records.select(sel, FINISHED))
        if not jobs:
            raise NotFound("Nothing to do: required jobs not found.")
        ids = [j.id for j in jobs]
        m.records.delete(ids)
    for job in jobs:  # kept until now: a finished job may be requeued
        if job.script_copy:
            Path(job.script_copy).unlink(missing_ok=True)
    return {"text": f"{plural(len(ids), 'finished job')} removed.\n", "removed": ids}


def configure(m: Master, s: Session, msg: dict) -> dict:
    key = msg["key"]
    with m.lock:
        if key is None:
            return {"text": config.summary(m.settings, m.paused), "settings": m.settings}
        try:
            value = config.parse(key, msg["values"])
        except config.ConfigError as exc:
            raise BadRequest(str(exc)) from None
        m.set_setting(key, value)
    return {"text": config.message(key, value) + "\n"}


def ctrl(m: Master, s: Session, msg: dict) -> dict:
    action = msg["action"]
    if action in ("pause", "continue"):
        with m.lock:
            m.set_setting("paused", action == "pause")
        m.schedule()
        return {"text": f"Job submission {'paused' if action == 'pause' else 'continued'}.\n"}
    if action != "jump":
        raise BadRequest(f"Unknown ctrlQueue type: {action}.")
    target = msg.get("target")
    if not isinstance(target, str) or not (target in ("begin", "end") or target.isdigit()):
        raise BadRequest(f"jump target must be a job ID, begin or end, not {target!r}")
    sel = _selection(msg)
    with m.lock:
        if not m.paused:
            raise RequestError("Pause the queue before trying to control it.")
        ids = [j.id for j in m.records.live_matches(sel) if j.status == QUEUE]
        text, changed = m.records.reorder(ids, target)
        if not changed:
            raise RequestError(text)
    return {"text": text + "\n"}


def _note_text(t: float, text: str) -> str:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))
    return f"----- Note added at {stamp}:\n{text}\n\n"


def notes(m: Master, s: Session, msg: dict) -> dict:
    job_id, text = msg["job"], msg["text"]
    with m.lock:
        if job_id is None:
            ids = m.records.jobs_with_notes()
            if not ids:
                return {"text": "You have no notes.\n"}
            return {"text": "You have notes for the following jobs:\n"
                            + " ".join(map(str, ids)) + "\n"}
        if m.records.get(job_id) is None:
            raise NotFound(f"job {job_id} not found")
        if text is None:
            stored = m.records.notes(job_id)
            if not stored:
                return {"text": f"No notes for {job_id}\n"}
            return {"text": "".join(_note_text(t, body) for t, body in stored)}
        if not text.strip():
            raise BadRequest("the note is empty")
        m.records.add_note(job_id, time.time(), text)
    return {"text": "Note stored.\n"}


def status(m: Master, s: Session, msg: dict) -> dict:
    """The multiuser's status as it answers, and which multiuser it is; Unreachable
    when it cannot answer."""
    refuse_if_removed(m)  # a fresh master may still be connecting
    allocator = embedded.describe(m.home, m.user)
    which = ("the cluster's multiuser at " + allocator["address"]
             if allocator["kind"] == "cluster" else "the personal multiuser")
    reply = ask_multiuser(m, {"type": "status"}, which)
    reply.pop("re", None)
    return {**reply, "allocator": allocator}


def ping(m: Master, s: Session, msg: dict) -> dict:
    return {"pid": os.getpid()}


def make_table(m: Master, stop) -> dict:
    """The explicit request table: nothing outside it can be reached."""

    def bind(fn):
        return lambda session, msg: fn(m, session, msg)

    def finish(session: Session, msg: dict) -> dict:
        return {"text": "Stopping qpy-master driver.\n", "_after": stop}

    table = {name: bind(fn) for name, fn in {
        "sub": sub, "check": check, "kill": kill, "clean": clean, "config": configure,
        "ctrl": ctrl, "notes": notes, "status": status, "ping": ping,
        # the queue's semantics (issue 13)
        "bulk": bulk, "hold": hold, "why": lambda m, s, msg: why.why(m, msg["job"]),
        **session_requests.HANDLERS}.items()}
    table.update(run_handlers.make_table(m))
    table["finish"] = finish
    table["cli"] = lambda session, msg: command_server.serve(table, session, msg,
                                                             m.sessions.take_notices)
    return table
