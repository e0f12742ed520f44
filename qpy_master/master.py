"""The master: one user's jobs from the queue to their recorded end.

Everything that changes jobs holds ``self.lock`` and writes the record before it acts: a
job is stored as ``running`` before its start op is sent, and stored as finished before
its slot is released. Three kinds of events make it ask for slots at once
(``qpy_master/scheduler.py``), and nothing sleeps on a timer: a submission or
``continue``; a job's end reported by a launcher; a ``wake`` pushed by the multiuser
when cores free up.
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
from qpy.states import KILLED, LOST, QUEUE, RUNNING
from qpy_master.ends import end_of
from qpy_master.launcher_link import LauncherGone
from qpy_master.launcher_pool import LauncherPool
from qpy_master.multinode import MultiNode
from qpy_master.multiuser_link import MultiuserLink
from qpy_master.notify import Notifier
from qpy_master.reconcile import Reconciler
from qpy_master.records import Records
from qpy_master.scheduler import Scheduler
from qpy_master.sessions import Sessions
from qpy_master.store import Store
from qpy_master.waiting import Waiters

log = logging.getLogger("qpy.master")


def command(job: Job, settings: dict, session: str | None = None) -> str:
    """The shell command of a job (or ``session``'s, for an interactive one), after the
    files ``sourceTheseFiles`` names."""
    sources = "".join(f". {shlex.quote(f)}; " for f in settings["sourceTheseFiles"])
    return sources + (session or job.run_command or job.command)


def job_limits(job: Job, node: dict) -> dict:
    """What the job's node enforces of its allocation (``qpy/limits.py``), with the
    node's settings from the ``nodes`` file."""
    return {"cores": job.n_cores, "mem": job.mem, "cgroup": node.get("cgroup"),
            "rlimit_as": bool(node.get("rlimit_as")), "cpu_lock": node.get("cpu_lock")}


def array_vars(job: Job) -> dict[str, str]:
    """An array task's index and its array's ID (the first task's)."""
    if job.array_index is None:
        return {}
    return {"QPY_ARRAY_INDEX": str(job.array_index), "QPY_ARRAY_JOB_ID": str(job.array_id)}


class Master:
    """One user's queue, running jobs, launchers and link to the multiuser."""

    def __init__(self, home: Path, user: str, connect: Callable[[], object]) -> None:
        self.home, self.user = home, user
        self.lock = threading.RLock()
        self.store = Store(home / "jobs.db")
        self.records = Records(self.store)
        self.sessions = Sessions(self)  # interactive jobs (qpy connect)
        self.waiters = Waiters()
        self.records.on_end.append(self.waiters.ended)
        self.notifier = Notifier(self.lock, user, lambda: self.settings, self.store.on_rollback)
        self.records.on_end.append(self.notifier.ended)
        self.settings = config.load(self.store.settings())
        self.paused = self.store.setting("paused") == "true"
        self.nodes: dict[str, dict] = {}
        self.stopping = False
        self.pool = LauncherPool(home, self.lock, self)
        self.multinode = MultiNode(home, self.pool, lambda: self.settings["killGrace"])
        self.records.on_move.append(self.multinode.moved)
        self.scheduler = Scheduler(self, self.records)
        self.reconciler = Reconciler(self.records, self.pool.tell, self.schedule)
        self.link = MultiuserLink(connect, self._hello, self._on_hello, self._on_event)
        self.scheduler.link = self.link
        with self.lock:  # after the scheduler exists: an adopted job may end at once
            for job in list(self.records.running.values()):
                self.multinode.adopt(job)
                self._send(job, {"op": "adopt", "job": job.id})
            self.pool.reach(self.reconciler.nodes())  # they owe an answer
        log.info("restored %d queued and %d running jobs", len(self.records.queue),
                 len(self.records.running))

    def shutdown(self) -> None:
        """Stop scheduling and leave the jobs running; the next master adopts them."""
        with self.lock:
            self.stopping = True
        self.scheduler.stop()
        self.link.close()
        self.pool.close()
        self.notifier.close()
        with self.lock:
            self.store.close()

    # -- the multiuser link ----------------------------------------------------------------

    def _hello(self) -> dict:
        """Registration: the running jobs are the truth the multiuser reconciles to."""
        with self.lock:
            self.scheduler.registering()
            self.scheduler.told_queue = len(self.records.queue.ready)
            return {"type": "hello", "queue_size": len(self.records.queue.ready), "running": [
                {"job": j.id, "node": j.node, "cores": j.n_cores, "mem": j.mem,
                 **({"more": [list(p) for p in zip(j.nodes[1:], j.span["cores"][1:],
                                                   j.span["mem"][1:], strict=True)]}
                    if j.span else {})}
                for j in self.records.running.values()]}

    def _on_hello(self, reply: dict) -> None:
        if reply.get("unaccounted"):
            log.warning("the multiuser does not count running jobs %s: it did not grant them "
                        "or they do not fit its nodes", reply["unaccounted"])
        self._set_nodes(reply.get("nodes") or [])
        self.sessions.from_hello(reply)

    def _on_event(self, event: dict) -> None:
        if event.get("type") == "nodes":
            self._set_nodes(event.get("nodes") or [])
        if event.get("type") in ("wake", "nodes"):
            self.schedule()
        elif event.get("type") == "unchain":
            self.scheduler.unchain(int(event.get("epoch") or 0))
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
                elif state in ("up", "draining") and was == "down":
                    self.pool.node_up(name)

    # -- scheduling (qpy_master/scheduler.py asks; these answer) -----------------------

    def schedule(self) -> None:
        """Something changed that may let a job start: ask for slots now."""
        self.scheduler.poke()

    def wanted(self) -> tuple[list[dict], int]:
        """The slot requests to make now, and the queue's size."""
        want = [] if self.paused else self.pool.avoiding(self.records.queue.want())
        return want, len(self.records.queue.ready)  # held or waiting jobs wait for no one

    def start(self, job: Job) -> None:
        """Send the start op of a job just recorded as running."""
        self._send(job, {
            "op": "start", "job": job.id, "cwd": job.cwd,
            "cmd": command(job, self.settings, self.sessions.command(job) if job.kind else None),
            "env_id": job.env_id, "grace": float(self.settings["killGrace"]),
            "vars": {"QPY_JOB_ID": str(job.id), "QPY_NODE": job.node or "",
                     "QPY_N_CORES": str(job.n_cores), "QPY_MEM": f"{job.mem:g}",
                     **array_vars(job),
                     **(self.multinode.vars(job, self.env(job.env_id)) if job.span else {})},
            "out": job.output("out"), "err": job.output("err"), "umask": job.umask,
            "limit": job.time_limit, "limits": job_limits(job, self.nodes.get(job.node) or {}),
            **self.sessions.op_fields(job)})
        trace.mark("master: start sent")

    def _send(self, job: Job, op: dict) -> None:
        """Send an op about ``job`` to its node's launcher (a start goes with the job's
        environment). If the node cannot be reached, a job that was about to start goes
        back to the queue; a running one stays running until the node is back (its ops
        are sent again then) or declared down."""
        try:
            if op["op"] == "start":
                self.pool.send_env(job)
            self.pool.send_op(job, op)
        except LauncherGone as exc:
            log.error("job %d: %s", job.id, exc)
            if op["op"] == "start" and job.status == RUNNING:
                self.start_failed(job, f"not started: {exc}")

    # -- what the launchers report (LauncherPool's owner, called under the lock) ----------

    def jobs_on(self, node: str) -> list[Job]:
        return self.records.on_node(node)

    def unsettled_on(self, node: str) -> list[int]:
        return self.reconciler.waiting_on(node)

    def env(self, env_id: int | None) -> dict[str, str]:
        return self.store.env(env_id)

    def reachable(self, node: str) -> None:
        self.schedule()

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
        if kind == "fate" or job is None or job.node != node or (
                kind == "ended" and event.get("killed") and not job.kill_requested):
            if kind in ("fate", "ended", "lost"):  # a run given up on (and killed, if this
                self.reconciler.settle(node, event)  # job runs there again): its node tells
            return
        if kind == "started":  # kept in memory, stored with the end: the slot has it too
            job.pid = event.get("pid")
            job.t_start = event.get("t") or job.t_start
        elif kind == "ended":
            job.t_start = event.get("t") or job.t_start  # a start answered by an old run
            status, fields = end_of(job, event)
            fields["reason"] = fields["reason"] or self.sessions.end_reason(job) \
                or self.multinode.end_reason(job)
            self._finish(job, status, ended=True, **fields)
        elif kind == "session":
            self.sessions.event(job, event)
        elif kind == "lost" and not event.get("ran"):
            self._requeue(job, "its start never reached the node")
        elif kind == "lost":
            self._lose(job, f"lost on {node}: {event.get('reason')}")

    # -- a job's end -----------------------------------------------------------------------

    def _node_down(self, node: str, reason: str) -> None:
        """The multiuser declared ``node`` down: its jobs are lost, or queued again if they
        asked for that, killed there if reached, and asked about when the node is back
        (``reconcile``: the node keeps their slots until then)."""
        if self.pool.session_works(node):
            log.warning("node %s is down for the multiuser (%s) but this master's session "
                        "to it works: its jobs go on", node, reason)
            return
        for job_id in self.multinode.node_down(node, f"node {node} of the job went down"):
            if job_id in self.records.running:
                self.kill_running(self.records.running[job_id])
        for job in self.records.on_node(node):
            self.pool.tell(node, {"op": "kill", "job": job.id})  # waits if connecting
            why = f"node {node} went down: {reason}"
            if job.kill_requested:
                self._finish(job, KILLED, reason=why)
                continue
            why += "" if job.pid else " (its start had not been acknowledged)"
            with self.records.transaction():
                self.reconciler.give_up(job, node)
                self._lose(job, why, forget=False)

    def _lose(self, job: Job, why: str, forget: bool = True) -> None:
        """A running job whose run is gone: queued again if it asked for that, else lost
        (killed, if a kill had been asked for). Its slot stays on the node if ``forget``
        is false (a run given up on: the node tells its fate later)."""
        if job.requeue and not job.kill_requested:
            with self.records.transaction():  # the lost run stays in the history
                self.records.add_run(job, status=LOST, reason=why, t_end=time.time())
                self._requeue(job, why, forget)
        else:
            self._finish(job, KILLED if job.kill_requested else LOST, forget, reason=why)

    def _requeue(self, job: Job, why: str, forget: bool = True) -> None:
        """Back to the head of the queue: the job never ran, or asked to run again."""
        log.warning("job %d goes back to the queue: %s", job.id, why)
        if forget:
            self.pool.tell(job.node, {"op": "forget", "job": job.id})
        self.records.move(job, QUEUE, node=None, address=None, t_start=None, pid=None,
                          nodes=None, span=None)
        self.scheduler.freed(job)

    def _finish(self, job: Job, status: str, forget: bool = True, ended: bool = False,
                **fields: object) -> None:
        """Record a running job's end (exit_code, signal, reason, t_end, usage); its slot
        goes to the next job (if it ``ended`` on its node: ``successor``) or back, and its
        node forgets it unless it is to tell what became of the run (``forget`` false)."""
        fields["t_end"] = fields.get("t_end") or time.time()
        with self.records.transaction():
            self.records.move(job, status, **fields, t_start=job.t_start, pid=job.pid)
            then = self.scheduler.successor(job) if ended else None
        trace.mark("master: end recorded")
        if forget:
            self.pool.tell(job.node, {"op": "forget", "job": job.id})
        self.scheduler.freed(job, then)

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
        self.multinode.killed(job)
