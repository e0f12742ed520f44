"""The master: one user's jobs from the queue to their recorded end.

Everything that changes jobs holds ``self.lock`` and writes the record before it acts: a
job is stored as ``running`` before its start op is sent, and stored as finished before
its slot is released. Three kinds of events drive the scheduler thread, and nothing
sleeps on a timer: a submission or ``continue``; a job's end reported by a launcher; a
``wake`` pushed by the multiuser when cores free up.
"""

from __future__ import annotations

import json
import logging
import shlex
import threading
import time
from collections.abc import Callable
from pathlib import Path

from qpy import config, trace
from qpy.model import Job
from qpy.states import DONE, KILLED, LOST, QUEUE, RUNNING
from qpy_master.launcher_link import LauncherGone
from qpy_master.launcher_pool import LauncherPool
from qpy_master.multiuser_link import LinkDown, MultiuserLink
from qpy_master.records import Records
from qpy_master.sessions import Sessions
from qpy_master.store import Store

log = logging.getLogger("qpy.master")


def start_error(job: Job, error: object, where: object) -> str | None:
    """The reason of a job that could not start, from the supervisor's short record."""
    if not error:
        return None
    if where == "cwd":
        return (f"failed to start: the submission directory {job.cwd} cannot be used on "
                f"{job.node} ({error}); qpy needs it visible on the nodes, as with "
                "shared home directories")
    if where in ("out", "err"):
        return f"failed to start: {error}: {job.output(where)}"
    return f"failed to start: {error}"


class Master:
    """One user's queue, running jobs, launchers and link to the multiuser."""

    def __init__(self, home: Path, user: str, connect: Callable[[], object]) -> None:
        self.home, self.user = home, user
        self.lock = threading.RLock()
        self.store = Store(home / "jobs.db")
        self.records = Records(self.store)
        self.sessions = Sessions(self)  # interactive jobs (qpy connect)
        self.settings = config.load(self.store.settings())
        self.paused = self.store.setting("paused") == "true"
        self.release: list[int] = []
        self.nodes: dict[str, dict] = {}
        self.wake = threading.Event()
        self.stopping = False
        self.pool = LauncherPool(home, self.lock, self)
        with self.lock:
            for job in list(self.records.running.values()):
                self._send(job, {"op": "adopt", "job": job.id})
        log.info("restored %d queued and %d running jobs", len(self.records.queue),
                 len(self.records.running))
        self.link = MultiuserLink(connect, self._hello, self._on_hello, self._on_event)
        threading.Thread(target=self._schedule_loop, name="scheduler", daemon=True).start()

    def shutdown(self) -> None:
        """Stop scheduling and leave the jobs running; the next master adopts them."""
        with self.lock:
            self.stopping = True
        self.link.close()
        self.pool.close()
        with self.lock:
            self.store.close()

    # -- the multiuser link ----------------------------------------------------------------

    def _hello(self) -> dict:
        """Registration: the running jobs are the truth the multiuser reconciles to."""
        with self.lock:
            return {"type": "hello", "queue_size": len(self.records.queue), "running": [
                {"job": j.id, "node": j.node, "cores": j.n_cores, "mem": j.mem}
                for j in self.records.running.values()]}

    def _on_hello(self, reply: dict) -> None:
        self._set_nodes(reply.get("nodes") or [])
        self.sessions.from_hello(reply)
        self.wake.set()

    def _on_event(self, event: dict) -> None:
        if event.get("type") == "nodes":
            self._set_nodes(event.get("nodes") or [])
        if event.get("type") in ("wake", "nodes"):
            self.wake.set()
        elif event.get("type") in ("limits", "idle_action"):
            self.sessions.multiuser_event(event)

    def _set_nodes(self, nodes: list) -> None:
        """The multiuser's view of the nodes. A node it now declares down takes its jobs
        with it; one that is up again may be tried again at once."""
        with self.lock:
            old = self.nodes
            self.nodes = {n["name"]: n for n in nodes if isinstance(n, dict) and "name" in n}
            for name, node in self.nodes.items():
                state, was = node.get("state"), old.get(name, {}).get("state")
                if state == "down" and was != "down":
                    self._node_down(name, str(node.get("reason") or "unreachable"))
                elif state == "up" and was == "down":
                    self.pool.node_up(name)

    # -- scheduling ------------------------------------------------------------------------

    def _schedule_loop(self) -> None:
        while True:
            self.wake.wait()
            self.wake.clear()
            if self.stopping:
                return
            try:
                self._schedule_once()
            except Exception:
                log.exception("scheduling pass failed")

    def _schedule_once(self) -> None:
        with self.lock:
            release, self.release = self.release, []
            want = [] if self.paused else self.pool.avoiding(self.records.queue.want())
            queue_size = len(self.records.queue)
        if not release and not want:
            return
        trace.mark("master: slots asked")
        try:
            reply = self.link.request({"type": "slots", "release": release, "want": want,
                                       "queue_size": queue_size})
        except LinkDown:
            reply = {"ok": False}
        if not reply.get("ok"):  # a release for a job the hello left out is harmless;
            if reply.get("error"):  # a release lost would hold its core forever
                log.error("slot request refused: %s", reply["error"])
            with self.lock:
                self.release[:0] = release
            return
        grants = reply.get("grants") or []
        trace.mark("master: slots answered")
        with self.lock:
            for grant in grants:
                self._launch(grant)
        if grants and reply.get("more"):
            self.wake.set()

    def _launch(self, grant: dict) -> None:
        """Record the job as running, then start it: it can never run twice."""
        job = self.records.queue.get(grant.get("job"))
        if job is None or self.paused:  # killed or paused while the request was in flight
            self.release.append(grant.get("job"))
            self.wake.set()
            return
        self.records.move(job, RUNNING, node=grant["node"], address=grant.get("address"),
                          t_start=time.time())
        self._send(job, {
            "op": "start", "job": job.id, "cmd": self._command(job), "cwd": job.cwd,
            "env_id": job.env_id, "grace": float(self.settings["killGrace"]),
            "vars": {"QPY_JOB_ID": str(job.id), "QPY_NODE": job.node or "",
                     "QPY_N_CORES": str(job.n_cores), "QPY_MEM": f"{job.mem:g}"},
            "out": job.output("out"), "err": job.output("err"),
            **self.sessions.op_fields(job)})
        trace.mark("master: start sent")

    def _command(self, job: Job) -> str:
        sources = "".join(f". {shlex.quote(f)}; " for f in self.settings["sourceTheseFiles"])
        if job.kind:
            return sources + self.sessions.command(job)
        return sources + (job.run_command or job.command)

    def _send(self, job: Job, op: dict) -> None:
        """Send an op about ``job`` to its node's launcher (a start goes with the job's
        environment). If the node cannot be reached, a job that was about to start goes
        back to the queue; a running one stays running until the node is back (its ops
        are sent again then) or declared down."""
        try:
            if op["op"] == "start":
                self.pool.send_env(job)
            self.pool.send(job, op)
        except LauncherGone as exc:
            log.error("job %d: %s", job.id, exc)
            if op["op"] == "start" and job.status == RUNNING:
                self.start_failed(job, f"not started: {exc}")

    # -- what the launchers report (LauncherPool's owner, called under the lock) ----------

    def jobs_on(self, node: str) -> list[Job]:
        return self.records.on_node(node)

    def env(self, env_id: int | None) -> dict[str, str]:
        return self.store.env(env_id)

    def reachable(self, node: str) -> None:
        self.wake.set()

    def unreachable(self, node: str, reason: str) -> None:
        if self.nodes.get(node, {}).get("state") == "down":
            self._node_down(node, str(self.nodes[node].get("reason") or reason))

    def start_failed(self, job: Job, why: str) -> None:
        self._requeue(job, why)

    def launcher_event(self, node: str, event: dict) -> None:
        kind = event.get("ev")
        if kind in ("ready", "error"):
            log.log(logging.ERROR if kind == "error" else logging.DEBUG, "launcher %s: %s",
                    node, event)
            return
        job = self.records.running.get(event.get("job"))
        if job is None or job.node != node:
            return
        if kind == "started":  # kept in memory, stored with the end: the slot has it too
            job.pid = event.get("pid")
            job.t_start = event.get("t") or job.t_start
        elif kind == "ended":
            self._finish(job, KILLED if job.kill_requested else DONE,
                         exit_code=event.get("exit"), signal=event.get("signal"),
                         reason=start_error(job, event.get("error"), event.get("in"))
                         or self.sessions.end_reason(job),
                         t_end=event.get("t_end"))
        elif kind == "session":
            self.sessions.event(job, event)
        elif kind == "lost" and not event.get("ran"):
            self._requeue(job, "its start never reached the node")
        elif kind == "lost":
            self._lose(job, f"lost on {node}: {event.get('reason')}")

    # -- a job's end -----------------------------------------------------------------------

    def _node_down(self, node: str, reason: str) -> None:
        """The multiuser declared ``node`` down: its jobs are lost, or queued again if they
        asked for that. Whatever of them still runs there is killed (now if the launcher
        can be reached, else by the sweep when the node is back)."""
        if self.pool.session_works(node):
            log.warning("node %s is down for the multiuser (%s) but this master's session "
                        "to it works: its jobs go on", node, reason)
            return
        for job in self.records.on_node(node):
            self.pool.tell(node, {"op": "kill", "job": job.id})  # waits if connecting
            self._lose(job, f"node {node} went down: {reason}")

    def _lose(self, job: Job, why: str) -> None:
        """A running job whose run is gone: queued again if it asked for that, else lost
        (killed, if a kill had been asked for)."""
        if job.requeue and not job.kill_requested:
            self._requeue(job, why)
        else:
            self._finish(job, KILLED if job.kill_requested else LOST, reason=why)

    def _requeue(self, job: Job, why: str) -> None:
        """Back to the head of the queue: the job never ran, or asked to run again."""
        log.warning("job %d goes back to the queue: %s", job.id, why)
        self.pool.tell(job.node, {"op": "forget", "job": job.id})
        self.records.move(job, QUEUE, node=None, address=None, t_start=None, pid=None)
        self.release.append(job.id)
        self.wake.set()

    def _finish(self, job: Job, status: str, exit_code: int | None = None,
                signal: int | None = None, reason: str | None = None,
                t_end: float | None = None) -> None:
        """Record a running job's end, then free its slot and its run files."""
        self.records.move(job, status, exit_code=exit_code, signal=signal, reason=reason,
                          t_start=job.t_start, t_end=t_end or time.time(), pid=job.pid)
        if job.script_copy:
            Path(job.script_copy).unlink(missing_ok=True)
        self.release.append(job.id)
        self.wake.set()
        trace.mark("master: end recorded")
        self.pool.tell(job.node, {"op": "forget", "job": job.id})

    # -- operations used by the request handlers -------------------------------------------

    def set_setting(self, key: str, value: object) -> None:
        """A user setting (``qpy config``) or the queue's pause state, kept across
        restarts."""
        if key == "paused":
            self.paused = bool(value)
            self.store.put_setting(key, "true" if value else "false")
        else:
            self.settings[key] = value
            self.store.put_setting(key, json.dumps(value))

    def kill_running(self, job: Job) -> None:
        self.records.update(job, kill_requested=True)
        self._send(job, {"op": "kill", "job": job.id})
