"""``qpy connect``'s requests to the master: ``sessions``, ``connect``, ``session_wait``.

A new session is checked before anything is stored: its name, the admin's limits (a cap
on sessions per user, their cores and memory) and whether the nodes it could run on have
what it needs (tmux; xpra and Xvfb for ``--gui``). A node's tools are known from node
monitoring, and this machine's from the submitter's PATH; nodes without them are left out
of the job's attribute expression, and if none is left the request is refused naming what
is missing. A new session goes to the head of the user's queue: it is what the user waits
for at the terminal.
"""

from __future__ import annotations

import re
import shlex
import shutil
import time

from qpy import attrs, ssh, trace
from qpy.server import BadRequest, NotFound, RequestError, Session
from qpy.states import FINISHED, RUNNING
from qpy.words import plural
from qpy_master import submit
from qpy_master.handler_args import refuse_if_removed
from qpy_master.master import Master

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,39}")
WAIT_MAX = 30.0  # seconds one session_wait may block; the client asks again
UNTIL = ("ready", "end")


def check_name(name: str | None) -> None:
    if name is None:
        return
    if not NAME.fullmatch(name) or name.isdigit():
        raise BadRequest(f"invalid session name {name!r}: use up to 40 letters, digits, "
                         "'.', '_' or '-', not all digits (those are job IDs)")


def check_limits(m: Master, cores: int, mem: float) -> None:
    """The admin's limits for interactive sessions, refused with the reason."""
    limits = m.sessions.limits
    most, live = limits.get("max_sessions"), len(m.sessions.live())
    if most is not None and live >= most:
        raise RequestError(f"you have {plural(live, 'interactive session')}, "
                           f"the most the admin allows (max_sessions {most}): end one with "
                           "qpy kill ID (qpy connect -l lists them)")
    if limits.get("max_cores") is not None and cores > limits["max_cores"]:
        raise RequestError(f"an interactive session may have at most {limits['max_cores']} "
                           f"cores (max_cores), not {cores}")
    if limits.get("max_mem") is not None and mem > limits["max_mem"]:
        raise RequestError(f"an interactive session may have at most {limits['max_mem']:g} "
                           f"GB of memory (max_mem), not {mem:g}")


def _local(node: dict) -> bool:
    """Whether a node of the multiuser's is this machine."""
    return ssh.is_local(node.get("name"), node.get("address"))


def _missing(node: dict, need: tuple[str, ...], path: str | None) -> str | None:
    """The first of ``need`` the node lacks (None: it has them all, or nobody knows)."""
    if _local(node):
        return next((t for t in need if shutil.which(t, path=path) is None), None)
    tools = node.get("tools")
    return None if tools is None else next((t for t in need if t not in tools), None)


def with_tools(m: Master, attr: str | None, need: tuple[str, ...],
               path: str | None) -> str | None:
    """``attr`` narrowed to the up nodes that have ``need``; refused if none has."""
    nodes = attrs.matching((n for n in m.nodes.values() if n.get("state", "up") == "up"),
                           attr)
    missing = {n["name"]: _missing(n, need, path) for n in nodes}
    good = sorted(name for name, tool in missing.items() if tool is None)
    if nodes and not good:
        tool = next(t for t in need if t in missing.values())
        where = "this machine" if all(_local(n) for n in nodes) else ", ".join(sorted(missing))
        raise RequestError(f"{tool} is not installed on {where}")
    if not nodes or len(good) == len(nodes):
        return attr
    only = " or ".join(good)
    return f"({attr}) and ({only})" if attr else only


def sessions(m: Master, s: Session, msg: dict) -> dict:
    now = time.time()
    with m.lock:
        return {"sessions": [m.sessions.record(j, now) for j in m.sessions.live()],
                "notices": m.sessions.take_notices()}


def connect(m: Master, s: Session, msg: dict) -> dict:
    """A new interactive job, checked, stored and queued first."""
    trace.mark("master: connect request")
    name, gui = msg["name"], msg["gui"]
    check_name(name)
    if gui is not None and (not gui or not gui[0]):
        raise BadRequest("--gui needs a program to run")
    refuse_if_removed(m, " (sessions already queued wait until access returns)")
    command = f"xpra: {shlex.join(gui)}" if gui else "tmux session" + (f" {name}" if name else "")
    with m.lock:
        taken = [j.id for j in m.sessions.live() if name is not None and j.name == name]
        if taken:
            raise RequestError(f"a session named {name} exists already (job {taken[0]}): "
                               f"qpy connect {name} attaches to it")
        need = ("xpra", "Xvfb") if gui else ("tmux",)
        attr = with_tools(m, msg["attr"], need, msg["env"].get("PATH"))
        spec = {"command": command, "n_cores": msg["n_cores"], "mem": msg["mem"], "attr": attr}
        (job, _), = submit.new_jobs([spec], msg, m.settings, m.nodes)
        check_limits(m, job.n_cores, job.mem)
        job.kind, job.name = ("gui" if gui else "tmux"), name
        with m.records.transaction():
            m.records.add([job], msg["env"])
            m.sessions.ids.add(job.id)
            if gui:
                m.records.update(job, session={"program": list(gui)})
            m.records.reorder([job.id], "begin")
        record = m.sessions.record(job, time.time())
    m.schedule()
    return {"text": f"Job {job.id} received.\n", "job": job.id, "session": record}


def session_wait(m: Master, s: Session, msg: dict) -> dict:
    """Block until the session is ready (or over), or over; at most ``timeout`` seconds
    (and WAIT_MAX): woken by the session's own changes, never by polling."""
    until = msg["until"]
    if until not in UNTIL:
        raise BadRequest(f"session_wait until must be one of {', '.join(UNTIL)}")
    deadline = time.monotonic() + max(0.0, min(float(msg["timeout"]), WAIT_MAX))
    with m.lock:
        while True:
            job = m.records.get(msg["job"])
            if job is None or not job.kind:
                raise NotFound(f"job {msg['job']} is not an interactive session")
            ready = job.status == RUNNING and (job.session or {}).get("ready")
            left = deadline - time.monotonic()
            if job.status in FINISHED or (until == "ready" and ready) or left <= 0:
                trace.mark("master: session_wait answered")
                return {"session": m.sessions.record(job, time.time())}
            m.sessions.changed.wait(left)


HANDLERS = {"sessions": sessions, "connect": connect, "session_wait": session_wait}
