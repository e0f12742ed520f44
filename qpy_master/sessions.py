"""Interactive jobs in the master: their command, their sessions' states, their idle times.

An interactive job (``qpy connect``) is a normal job with ``Job.kind`` "tmux" or "gui":
queue, fair share, status changes through ``Records.move``, kill, exit code and restart
survival take the same paths as for any job. What is particular to it is kept here:

* its command, built when it starts (the node and its python are known then): the node's
  session program (``session_node.py``), sent inline so the node needs nothing of qpy
  (as source, or compiled already for this machine, which runs it with this interpreter);
* its session's state as the node reports it (launcher ``session`` events): ready, socket,
  display, attached clients, idle time; stored with the job, so a restarted master shows
  them at once and the next launcher reports them afresh;
* waiting for a session to be ready or over (``changed``, a condition on the master's
  lock, notified by every status change of an interactive job and every state): requests
  block on an event, they do not poll;
* the admin's limits and idle policy, from the multiuser: idle times are reported to it
  whenever they change (a thread of its own, outside the lock), and its policy answers
  with a warning for the owner (a line on the next qpy command) or the session's end.

``session_requests`` holds ``qpy connect``'s requests, which use this.
"""

from __future__ import annotations

import base64
import functools
import logging
import marshal
import shlex
import sys
import threading
import time
import zlib
from pathlib import Path

from qpy import render, ssh, trace
from qpy.model import Job
from qpy.states import QUEUE, RUNNING
from qpy.words import plural
from qpy_master import session_node
from qpy_master.multiuser_link import LinkDown

log = logging.getLogger("qpy.master.sessions")
# What is kept of a node's state, and its type (anything else is dropped: the state file
# is in the user's own directory)
STATE = {"ready": bool, "dir": str, "socket": str, "display": int, "xpra": str,
         "attached": int, "error": str}
BOOT = "import sys,zlib,binascii;exec(zlib.decompress(binascii.a2b_base64(sys.argv[1])))"
# this machine runs it with this very interpreter: compiled here, it need not compile it
BOOT_CODE = ("import sys,zlib,binascii,marshal;exec(marshal.loads(zlib.decompress("
             "binascii.a2b_base64(sys.argv[1]))))")
# bench/connect.py --trace: the session's python marks its start (as qpy/trace.py would)
TRACED = ("import os,time;f=os.open({path!r},os.O_WRONLY|os.O_APPEND);os.write(f,b'%d %d "
          "session: python up\\n'%(time.monotonic_ns(),os.getpid()));os.close(f);")


@functools.cache
def program(compiled: bool) -> str:
    """The session program as one shell word, compressed (made once): its source, or
    (``compiled``, for this machine's interpreter) its code, which starts ~3 ms sooner."""
    data = Path(session_node.__file__).read_bytes()
    if compiled:
        data = marshal.dumps(compile(data, session_node.__file__, "exec", dont_inherit=True))
    return base64.b64encode(zlib.compress(data, 9)).decode()


class Sessions:
    """The master's interactive jobs; every method but the sender thread runs under the
    master's lock."""

    def __init__(self, master) -> None:
        self.m = master
        self.changed = threading.Condition(master.lock)
        self.limits: dict = {}  # the multiuser's ``interactive`` policy
        self.notices: list[str] = []  # for the owner's next qpy command
        # IDs of the interactive jobs that may be queued or running (``live`` drops the
        # rest): a new one is added by ``connect``, a moved one by ``moved``
        records = master.records
        self.ids = {j.id for j in [*records.queue.jobs.values(), *records.running.values()]
                    if j.kind}
        self._dirty = threading.Event()
        master.records.on_move.append(self.moved)
        threading.Thread(target=self._send_loop, name="idle-reports", daemon=True).start()

    # -- starting --------------------------------------------------------------------------

    def directory(self, job: Job) -> str:
        """The session's private directory on its node, made by the node's launcher."""
        return str(self.m.home / "run" / str(job.node) / f"s{job.id}")

    def command(self, job: Job) -> str:
        """The job's command: the session program, run by this machine's interpreter on
        this machine and by the node's python3 elsewhere."""
        local = ssh.is_local(job.node, job.address)
        python = shlex.quote(sys.executable) if local else "python3"
        args = [self.directory(job), str(job.kind), str(job.id), str(job.node),
                *((job.session or {}).get("program") or [])]
        boot = (TRACED.format(path=trace.PATH) if trace.PATH else "") + (
            BOOT_CODE if local else BOOT)
        return (f"exec {python} -S -c {shlex.quote(boot)} {program(local)} -- "
                f"{shlex.join(args)}")

    def op_fields(self, job: Job) -> dict:
        """What a start op adds for an interactive job: its launcher watches its session."""
        return {"session": True} if job.kind else {}

    # -- what happens to sessions ----------------------------------------------------------

    def moved(self, job: Job) -> None:
        """``Records.move`` changed a job's status: waiters and the multiuser hear of a
        session's."""
        if job.kind:
            self.ids.add(job.id)  # a session queued again is live again
            self._wake()
            self.report()

    def event(self, job: Job, event: dict) -> None:
        """A new state of the job's session from its node."""
        state, idle = event.get("state"), event.get("idle")
        if not isinstance(state, dict) or not job.kind:
            return
        kept = {key: value if isinstance(value, kind) and (kind is bool or not isinstance(
            value, bool)) else None for key, kind in STATE.items() for value in [state.get(key)]}
        fields: dict = {"session": {**(job.session or {}), **kept}}
        if state.get("ready") and isinstance(idle, (int, float)):
            fields["idle_since"] = time.time() - max(0.0, float(idle))
        if state.get("error"):
            fields["reason"] = str(state["error"])[:200]
        self.m.records.update(job, **fields)
        self._wake()
        self.report()

    def end_reason(self, job: Job) -> str | None:
        """Why an interactive job ended, as recorded while it ran (an error, idleness)."""
        return job.reason if job.kind else None

    def _wake(self) -> None:
        """Wake ``session_wait``; every caller holds the master's lock (a move, a launcher
        event), and one that did not would fail here rather than lose the wake-up."""
        self.changed.notify_all()

    # -- what qpy connect sees -------------------------------------------------------------

    def live(self) -> list[Job]:
        """The queued and running interactive jobs, by ID, found among ``ids`` rather than
        all live jobs; ended ones (and one whose adding was rolled back) drop out here."""
        jobs = [job for i in sorted(self.ids)
                if (job := self.m.records.live(i)) is not None and job.kind]
        self.ids = {job.id for job in jobs}
        return jobs

    def record(self, job: Job, now: float) -> dict:
        """A session as ``qpy connect`` sees it (``wire.RECORDS["session"]``)."""
        state = job.session or {}
        running = job.status == RUNNING
        ready = running and bool(state.get("ready"))
        local = bool(job.node and ssh.is_local(job.node, job.address))
        idle = now - job.idle_since if running and job.idle_since is not None else None
        return {"id": job.id, "name": job.name, "kind": job.kind, "status": job.status,
                "node": job.node, "address": job.address, "local": local,
                "n_cores": job.n_cores, "mem": job.mem, "ready": ready,
                "dir": state.get("dir"), "socket": state.get("socket"),
                "display": state.get("display"),
                "attached": state.get("attached") if running else None,
                "idle": None if idle is None else round(max(0.0, idle), 1),
                "xpra": state.get("xpra"), "reason": job.reason,
                "waiting": self.waiting(job) if job.status == QUEUE else None,
                "exit_code": job.exit_code, "signal": job.signal,
                "attach": self.attach(job) if ready and not local else None}

    def attach(self, job: Job) -> list[str] | None:
        """The command that attaches the user's terminal to a ready session on another
        node: ``ssh -t`` with qpy's options, riding on this master's connection to it.
        Made here, where those options are known already, so ``qpy connect`` needs
        neither qpy.ssh nor ``ssh -G`` on its way to the prompt."""
        from qpy.interactive import ATTACH

        sock = (job.session or {}).get("socket")
        if not sock:
            return None
        try:
            return ssh.terminal_command(job.address or str(job.node),
                                        ["sh", "-c", ATTACH, "sh", "tmux", sock],
                                        str(self.m.home))
        except OSError as exc:  # no ssh client: qpy connect says so
            log.warning("job %d: no command to attach: %s", job.id, exc)
            return None

    def waiting(self, job: Job) -> str:
        """Why a queued session has not started yet, in a few words."""
        m = self.m
        if m.paused:
            return "the queue is paused (qpy ctrlQueue continue)"
        if not m.link.up:
            return "the multiuser cannot be reached"
        return f"no node has {plural(job.n_cores, 'core')} and {job.mem:g} GB free for you now"

    def take_notices(self) -> list[str]:
        notices, self.notices = self.notices, []
        return notices

    # -- the multiuser: limits, idle reports, idle policy ----------------------------------

    def from_hello(self, reply: dict) -> None:
        self.limits = reply.get("interactive") or {}
        self.report()  # a restarted multiuser learns the idle times again

    def multiuser_event(self, event: dict) -> None:
        """``limits`` (the admin reloaded them) or ``idle_action`` (warn, or end)."""
        if event.get("type") == "limits":
            self.limits = event.get("interactive") or {}
            return
        with self.m.lock:
            job = self.m.records.running.get(event.get("job"))
            idle = event.get("idle")
            if job is None or not job.kind or not isinstance(idle, (int, float)):
                return
            if event.get("action") == "warn":
                self.warn(job, idle)
            elif event.get("action") == "end" and not job.kill_requested:
                log.warning("job %d: ending the session, idle %s", job.id, idle)
                self.m.records.update(job, reason=f"idle {render.idle_text(idle)}")
                self.m.kill_running(job)

    def warn(self, job: Job, idle: float) -> None:
        """Tell the owner that a session is close to its idle limit: a line on their
        next qpy command, and their notify command if they set one."""
        label = f"session {job.id}" + (f" ({job.name})" if job.name else "")
        limit = self.limits.get("idle_limit")
        then = f"; sessions idle for {render.idle_text(limit)} are ended" if limit else ""
        self.notices.append(f"{label} has been idle for {render.idle_text(idle)}{then} "
                            f"(qpy connect {job.id}, or qpy kill {job.id})")
        self.m.notifier.idle_warned(job, idle)

    def report(self) -> None:
        """Send the idle times to the multiuser soon (from the sender thread)."""
        self._dirty.set()

    def _send_loop(self) -> None:
        while True:
            self._dirty.wait()
            self._dirty.clear()
            if getattr(self.m, "stopping", False):  # (not set yet while the master starts)
                return
            try:
                self._send()
            except Exception:  # the next change tries again; the thread must not end
                log.exception("reporting idle times failed")

    def _send(self) -> None:
        with self.m.lock:
            now = time.time()
            items = [{"job": j.id, "node": j.node, "attached": (j.session or {}).get(
                "attached"), "idle": None if j.idle_since is None
                else round(max(0.0, now - j.idle_since), 1)}
                for j in self.m.records.running.values() if j.kind]
        link = getattr(self.m, "link", None)
        if link is None or not link.up:
            return  # sent again after the next hello
        try:
            link.request({"type": "idle_report", "sessions": items}, timeout=10.0)
        except LinkDown:
            pass
