"""One handler per CLI request: check, change (store first), reply.

Replies carry ``text`` for the user. A refusal raises RequestError, which the server sends
as an error reply and the CLI prints on stderr with ``qpy:``.
"""

from __future__ import annotations

import json
import os
import time

from qpy import attrs, config, jobspec, selection
from qpy.model import FINISHED, QUEUE, RUNNING, UNDONE, Job
from qpy.server import RequestError, Session
from qpy_master.master import Master


def plural(n: int, word: str = "job") -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _selection(msg: dict) -> dict:
    try:
        return selection.validate(msg.get("select", {}))
    except selection.SelectionError as exc:
        raise RequestError(str(exc)) from None


def sub(m: Master, s: Session, msg: dict) -> dict:
    try:
        cores, mem, attr = jobspec.check_resources(msg["n_cores"], msg["mem"], msg["attr"])
    except jobspec.SpecError as exc:
        raise RequestError(str(exc)) from None
    cwd = msg["cwd"]
    if not os.path.isabs(cwd):
        raise RequestError(f"the submission directory must be absolute, not {cwd!r}")
    if any("\0" in (text or "") for text in (msg["command"], msg.get("run"), cwd)):
        raise RequestError("the command or directory contains a NUL character")
    if not m.nodes:  # a fresh master: learn the nodes first, so impossible jobs are refused
        m.link.wait_up(10.0)
    with m.lock:
        st = m.settings
        try:
            attr = attrs.combine(attr, st["defaultAttr"], st["andAttr"], st["orAttr"])
        except attrs.AttrError as exc:
            raise RequestError(str(exc)) from None
        why = m.fits_somewhere(cores, mem, attr)
        if why:
            raise RequestError(f"job refused: {why}")
        job = Job(id=0, status=QUEUE, command=msg["command"], cwd=cwd, n_cores=cores, mem=mem,
                  attr=attr, t_queue=time.time(), run_command=msg.get("run"),
                  requeue=bool(msg.get("requeue")))
        _record(m, job, msg)
    m.wake.set()
    return {"text": f"Job {job.id} received.\n", "job": job.id}


def _record(m: Master, job: Job, msg: dict) -> None:
    """Store the job (and its script copy) in one transaction, then queue it."""
    m.store.begin()
    try:
        job.env_id = m.store.env_id(msg["env"])
        qpos = m.queue.next_pos
        job.id = m.store.insert(job, qpos)
        copy = msg["copy"] if msg["copy"] is not None else m.settings["copyScripts"]
        index = msg.get("script_index")
        if copy and msg.get("argv") and isinstance(index, int):
            m.copy_script(job, msg["argv"], index)
            m.store.save(job, ("script_copy", "run_command"))
        m.store.commit()
    except OSError as exc:
        m.store.rollback()
        raise RequestError(f"cannot copy the script: {exc.strerror}: {exc.filename}") from None
    except BaseException:
        m.store.rollback()
        raise
    m.queue.push(job, qpos)


def check(m: Master, s: Session, msg: dict) -> dict:
    sel = _selection(msg)
    with m.lock:
        jobs = [j.public() for j in m.store.select(sel)]
        fmt = m.settings["checkFMT"]
        if "%K" in fmt:
            for job in jobs:
                notes = m.store.notes(job["id"])
                job["notes"] = "".join(_note_text(t, text) for t, text in notes) or None
        return {"jobs": jobs, "fmt": fmt, "colour": m.settings["colour"],
                "scheme": m.settings["coloursScheme"], "paused": m.paused}


def _live_matches(m: Master, sel: dict) -> list[Job]:
    """Queued and running jobs in the selection, found without scanning the store."""
    live = {**m.queue.jobs, **m.running}
    found: dict[int, Job] = {i: live[i] for i in sel["ids"] if i in live}
    for low, high in sel["ranges"]:
        ids = range(low, high + 1) if high - low < len(live) else list(live)
        found.update({i: live[i] for i in ids if i in live and low <= i <= high})
    if sel["statuses"] or sel["dirs"] or sel["all"]:
        found.update({j.id: j for j in live.values()
                      if selection.matches(sel, j.id, j.status, j.cwd)})
    return [found[i] for i in sorted(found)]


def kill(m: Master, s: Session, msg: dict) -> dict:
    sel = _selection(msg)
    with m.lock:
        targets = _live_matches(m, sel)
        queued = [j for j in targets if j.status == QUEUE]
        running = [j for j in targets if j.status == RUNNING]
        if not targets:
            raise RequestError("Nothing to do: required jobs not found.")
        now = time.time()
        m.store.begin()
        for job in queued:
            m.queue.remove(job.id)
            job.move(UNDONE)
            job.t_end = now
            m.store.save(job, ("status", "t_end"))
        m.store.commit()
        for job in running:
            m.kill_running(job)
    text = ""
    if queued:
        text += f"{plural(len(queued))} removed from the queue.\n"
    if running:
        text += f"{plural(len(running))} will be killed.\n"
    return {"text": text, "undone": [j.id for j in queued], "killing": [j.id for j in running]}


def clean(m: Master, s: Session, msg: dict) -> dict:
    sel = _selection(msg)
    with m.lock:
        ids = [j.id for j in m.store.select(sel, FINISHED)]
        if not ids:
            raise RequestError("Nothing to do: required jobs not found.")
        m.store.begin()
        m.store.delete(ids)
        m.store.commit()
    return {"text": f"{plural(len(ids), 'finished job')} removed.\n", "removed": ids}


def configure(m: Master, s: Session, msg: dict) -> dict:
    key = msg["key"]
    with m.lock:
        if key is None:
            return {"text": config.summary(m.settings, m.paused), "settings": m.settings}
        try:
            value = config.parse(key, msg["values"])
        except config.ConfigError as exc:
            raise RequestError(str(exc)) from None
        m.store.put_setting(key, json.dumps(value))
        m.settings[key] = value
    return {"text": config.message(key, value) + "\n"}


def ctrl(m: Master, s: Session, msg: dict) -> dict:
    action = msg["action"]
    if action in ("pause", "continue"):
        with m.lock:
            m.paused = action == "pause"
            m.store.put_setting("paused", "true" if m.paused else "false")
        m.wake.set()
        return {"text": f"Job submission {'paused' if action == 'pause' else 'continued'}.\n"}
    if action != "jump":
        raise RequestError(f"Unknown ctrlQueue type: {action}.")
    target = msg.get("target")
    if not isinstance(target, str) or not (target in ("begin", "end") or target.isdigit()):
        raise RequestError(f"jump target must be a job ID, begin or end, not {target!r}")
    sel = _selection(msg)
    with m.lock:
        if not m.paused:
            raise RequestError("Pause the queue before trying to control it.")
        ids = [j.id for j in _live_matches(m, sel) if j.status == QUEUE]
        text, order = m.queue.jump(ids, target)
        if not order:
            raise RequestError(text)
        m.store.begin()
        m.store.set_qpos(order)
        m.store.commit()
    return {"text": text + "\n"}


def _note_text(t: float, text: str) -> str:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))
    return f"----- Note added at {stamp}:\n{text}\n\n"


def notes(m: Master, s: Session, msg: dict) -> dict:
    job_id, text = msg["job"], msg["text"]
    with m.lock:
        if job_id is None:
            ids = m.store.jobs_with_notes()
            if not ids:
                return {"text": "You have no notes.\n"}
            return {"text": "You have notes for the following jobs:\n"
                            + " ".join(map(str, ids)) + "\n"}
        if m.store.get(job_id) is None:
            raise RequestError(f"job {job_id} not found")
        if text is None:
            stored = m.store.notes(job_id)
            if not stored:
                return {"text": f"No notes for {job_id}\n"}
            return {"text": "".join(_note_text(t, body) for t, body in stored)}
        if not text.strip():
            raise RequestError("the note is empty")
        m.store.add_note(job_id, time.time(), text)
    return {"text": "Note stored.\n"}


def status(m: Master, s: Session, msg: dict) -> dict:
    reply = m.status()
    if not reply.get("ok"):
        raise RequestError(reply.get("error") or "status failed")
    reply.pop("re", None)
    return reply


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
        "ctrl": ctrl, "notes": notes, "status": status, "ping": ping}.items()}
    table["finish"] = finish
    return table
