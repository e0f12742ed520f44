"""One handler per CLI request: check, change (store first), reply.

Replies carry ``text`` for the user. A refusal raises RequestError, which the server sends
as an error reply and the CLI prints on stderr with ``qpy:``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from qpy import config
from qpy.server import BadRequest, NotFound, RequestError, Session, Unreachable
from qpy.states import FINISHED, QUEUE, RUNNING, UNDONE
from qpy_master import command_server, embedded, run_handlers, session_requests, submit
from qpy_master.handler_args import plural, refuse_if_removed
from qpy_master.handler_args import selection_of as _selection
from qpy_master.master import Master
from qpy_master.multiuser_link import LinkDown


def sub(m: Master, s: Session, msg: dict) -> dict:
    if not m.nodes:  # a fresh master: learn the nodes first, so impossible jobs are refused
        m.link.wait_settled(10.0)
    refuse_if_removed(m, " (jobs already queued wait until access returns)")
    with m.lock:
        job = submit.new_job(msg, m.settings, m.nodes)
        copy = msg["copy"] if msg["copy"] is not None else m.settings["copyScripts"]
        index = msg.get("script_index")
        try:
            with m.records.transaction():
                m.records.add(job, msg["env"])
                if copy and msg.get("argv") and isinstance(index, int):
                    m.records.update(job, **submit.copy_script(m.home / "scripts", job,
                                                               msg["argv"], index))
        except OSError as exc:
            raise RequestError(f"cannot copy the script: {exc.strerror}: {exc.filename}") \
                from None
    m.schedule()
    return {"text": f"Job {job.id} received.\n", "job": job.id}


def check(m: Master, s: Session, msg: dict) -> dict:
    sel = _selection(msg)
    with m.lock:
        jobs = [j.public() for j in m.records.select(sel)]
        fmt = m.settings["checkFMT"]
        if "%K" in fmt:
            for job in jobs:
                notes = m.records.notes(job["id"])
                job["notes"] = "".join(_note_text(t, text) for t, text in notes) or None
        return {"jobs": jobs, "fmt": fmt, "colour": m.settings["colour"],
                "scheme": m.settings["coloursScheme"], "paused": m.paused}


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
                m.records.move(job, UNDONE, t_end=now)
        for job in running:
            m.kill_running(job)
    if queued:
        m.schedule()  # the multiuser hears the queue is shorter: a minimum held is lent
    text = ""
    if queued:
        text += f"{plural(len(queued))} removed from the queue.\n"
    if running:
        text += f"{plural(len(running))} will be killed.\n"
    return {"text": text, "undone": [j.id for j in queued], "killing": [j.id for j in running]}


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
    m.link.wait_settled(10.0)  # a fresh master may still be connecting
    refuse_if_removed(m)
    allocator = embedded.describe(m.home, m.user)
    which = ("the cluster's multiuser at " + allocator["address"]
             if allocator["kind"] == "cluster" else "the personal multiuser")
    try:
        reply = m.link.request({"type": "status"}, timeout=10.0)
    except LinkDown as exc:
        raise Unreachable(f"{which} is not reachable: {exc}") from None
    if not reply.get("ok"):
        raise Unreachable(reply.get("error") or f"{which} refused the status request")
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
        **session_requests.HANDLERS}.items()}
    table.update(run_handlers.make_table(m))
    table["finish"] = finish
    table["cli"] = lambda session, msg: command_server.serve(table, session, msg,
                                                             m.sessions.take_notices)
    return table
