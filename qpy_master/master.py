"""The master's state and its event-driven scheduling.

Everything that changes jobs holds ``self.lock`` and writes the store before it acts: a job
is committed as ``running`` before its launch op is sent, and committed as finished before
its slot is released. Three kinds of events drive the scheduler thread, and nothing sleeps
on a timer: a submission or ``continue``; a job's end reported by a launcher; a ``wake``
pushed by the multiuser when cores free up.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

from qpy import attrs, config
from qpy.model import DONE, KILLED, QUEUE, RUNNING, Job
from qpy_master.multiuser_link import LinkDown, MultiuserLink
from qpy_master.queue import JobQueue
from qpy_master.runner import LauncherGone, Runner
from qpy_master.store import Store

log = logging.getLogger("qpy.master")
LOCAL_NAMES = {"localhost", "127.0.0.1", "::1", socket.gethostname(), socket.getfqdn()}


class Master:
    """One user's queue, running jobs and their link to the multiuser."""

    def __init__(self, home: Path, user: str, connect: Callable[[], object]) -> None:
        self.home = home
        self.user = user
        self.lock = threading.RLock()
        self.store = Store(home / "jobs.db")
        self.settings = config.load(self.store.settings())
        self.paused = self.store.setting("paused") == "true"
        self.queue = JobQueue()
        self.running: dict[int, Job] = {}
        self.release: list[int] = []
        self.nodes: dict[str, dict] = {}
        self.runners: dict[str, Runner] = {}
        self.run_dir = home / "run"
        self.scripts = home / "scripts"
        self.wake = threading.Event()
        self.stopping = False
        self._restore()
        self.link = MultiuserLink(connect, self._hello, self._on_hello, self._on_event)
        threading.Thread(target=self._schedule_loop, name="scheduler", daemon=True).start()

    # -- start-up and shutdown -------------------------------------------------------------

    def _restore(self) -> None:
        """Rebuild memory from the store and re-adopt the jobs that were running."""
        queued, running = self.store.live()
        for job, qpos in queued:
            self.queue.push(job, qpos)
        for job in running:
            self.running[job.id] = job
            self._send(job, {"op": "adopt", "job": job.id})
        log.info("restored %d queued and %d running jobs", len(queued), len(running))

    def shutdown(self) -> None:
        """Stop scheduling and leave the jobs running; the next master adopts them."""
        with self.lock:
            self.stopping = True
            runners = list(self.runners.values())
        self.link.close()
        for runner in runners:
            runner.close()
        with self.lock:
            self.store.close()

    # -- the multiuser link ----------------------------------------------------------------

    def _hello(self) -> dict:
        """Registration: the running jobs are the truth the multiuser reconciles to."""
        with self.lock:
            self.release.clear()
            return {"type": "hello", "queue_size": len(self.queue), "running": [
                {"job": j.id, "node": j.node, "cores": j.n_cores, "mem": j.mem}
                for j in self.running.values()]}

    def _on_hello(self, reply: dict) -> None:
        self._set_nodes(reply.get("nodes") or [])
        self.wake.set()

    def _on_event(self, event: dict) -> None:
        if event.get("type") == "wake":
            self.wake.set()
        elif event.get("type") == "nodes":
            self._set_nodes(event.get("nodes") or [])
            self.wake.set()

    def _set_nodes(self, nodes: list) -> None:
        with self.lock:
            self.nodes = {n["name"]: n for n in nodes if isinstance(n, dict) and "name" in n}

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
            want = [] if self.paused else self.queue.want()
            queue_size = len(self.queue)
        if not release and not want:
            return
        try:
            reply = self.link.request({"type": "slots", "release": release, "want": want,
                                       "queue_size": queue_size})
        except LinkDown:
            return  # the next hello reports the running jobs, which settles the releases
        if not reply.get("ok"):
            log.error("slot request refused: %s", reply.get("error"))
            return
        grants = reply.get("grants") or []
        with self.lock:
            for grant in grants:
                self._launch(grant)
        if grants and reply.get("more"):
            self.wake.set()

    def _launch(self, grant: dict) -> None:
        """Record the job as running, then start it: it can never run twice."""
        job = self.queue.get(grant.get("job"))
        if job is None or self.paused:  # killed or paused while the request was in flight
            self.release.append(grant.get("job"))
            self.wake.set()
            return
        self.queue.remove(job.id)
        job.move(RUNNING)
        job.node, job.address, job.t_start = grant["node"], grant.get("address"), time.time()
        self.store.save(job, ("status", "node", "address", "t_start"))
        self.running[job.id] = job
        self._send_env(job)
        self._send(job, {
            "op": "start", "job": job.id, "cmd": self._command(job), "cwd": job.cwd,
            "env_id": job.env_id, "grace": float(self.settings["killGrace"]),
            "vars": {"QPY_JOB_ID": str(job.id), "QPY_NODE": job.node or "",
                     "QPY_N_CORES": str(job.n_cores), "QPY_MEM": f"{job.mem:g}"},
            "out": os.path.join(job.cwd, f"job_{job.id}.out"),
            "err": os.path.join(job.cwd, f"job_{job.id}.err")})

    def _command(self, job: Job) -> str:
        sources = "".join(f". {shlex.quote(f)}; " for f in self.settings["sourceTheseFiles"])
        return sources + (job.run_command or job.command)

    def _send_env(self, job: Job) -> None:
        """Give the node's launcher the job's submission environment unless it has it."""
        try:
            runner = self._runner(job)
        except LauncherGone:
            return  # _send reports it for the start op
        if job.env_id not in runner.envs_sent:
            self._send(job, {"op": "env", "id": job.env_id, "env": self.store.env(job.env_id)})
            runner.envs_sent.add(job.env_id)

    # -- launchers -------------------------------------------------------------------------

    def _runner(self, job: Job) -> Runner:
        """The launcher of the job's node, started on first use. The node's address was
        stored with the job at launch, so a restarted master finds it before it has heard
        from the multiuser; each node's launcher has its own run directory."""
        node = job.node
        runner = self.runners.get(node)
        if runner is None:
            address = job.address or self.nodes.get(node, {}).get("address", node)
            if address not in LOCAL_NAMES and node not in LOCAL_NAMES:
                raise LauncherGone(f"node {node} ({address}) is remote; remote nodes are not "
                                   "supported yet")
            runner = Runner(node, self.run_dir / node, self._on_launcher_event,
                            self._on_launcher_exit)
            self.runners[node] = runner
        return runner

    def _send(self, job: Job, op: dict) -> None:
        """Send an op about ``job`` to its node's launcher; a failure ends the job clearly."""
        try:
            self._runner(job).post(op)
        except LauncherGone as exc:
            log.error("job %d: %s", job.id, exc)
            if job.status == RUNNING and op["op"] in ("start", "adopt"):
                self._finish(job, DONE, reason=f"cannot launch: {exc}")

    def _on_launcher_exit(self, node: str, runner: Runner) -> None:
        """A launcher died: start another and let it adopt the node's running jobs."""
        with self.lock:
            if self.stopping or self.runners.get(node) is not runner:
                return
            del self.runners[node]
            for job in [j for j in self.running.values() if j.node == node]:
                self._send(job, {"op": "adopt", "job": job.id})

    def _on_launcher_event(self, node: str, event: dict) -> None:
        kind = event.get("ev")
        if kind in ("ready", "error"):
            log.log(logging.ERROR if kind == "error" else logging.DEBUG, "launcher %s: %s",
                    node, event)
            return
        with self.lock:
            job = self.running.get(event.get("job"))
            if job is None:
                return
            if kind == "started":  # kept in memory, stored with the end: the run file has it
                job.pid = event.get("pid")
                job.t_start = event.get("t") or job.t_start
            elif kind == "ended":
                error = event.get("error")
                self._finish(job, KILLED if job.kill_requested else DONE,
                             exit_code=event.get("exit"), signal=event.get("signal"),
                             reason=f"failed to start: {error}" if error else None,
                             t_end=event.get("t_end"))
            elif kind == "lost":
                self._lost(job, bool(event.get("ran")), str(event.get("reason")))

    def _lost(self, job: Job, ran: bool, reason: str) -> None:
        if ran:
            self._finish(job, DONE, reason=f"lost: {reason}")
            return
        log.warning("job %d never started; queueing it again", job.id)
        del self.running[job.id]
        job.move(QUEUE)
        job.node = job.address = job.t_start = job.pid = None
        self.store.save(job, ("status", "node", "address", "t_start", "pid"))
        self.queue.push(job, 0)
        self.release.append(job.id)
        self.wake.set()

    def _finish(self, job: Job, status: str, exit_code: int | None = None,
                signal: int | None = None, reason: str | None = None,
                t_end: float | None = None) -> None:
        """Record a running job's end, then free its slot and its run files."""
        self.running.pop(job.id, None)
        job.move(status)
        job.exit_code, job.signal, job.reason = exit_code, signal, reason
        job.t_end = t_end or time.time()
        self.store.save(job, ("status", "exit_code", "signal", "reason", "t_start", "t_end",
                              "pid"))
        if job.script_copy:
            Path(job.script_copy).unlink(missing_ok=True)
        self.release.append(job.id)
        self.wake.set()
        runner = self.runners.get(job.node)
        if runner is not None:
            try:
                runner.post({"op": "forget", "job": job.id})
            except LauncherGone:
                pass

    # -- operations used by the request handlers -------------------------------------------

    def kill_running(self, job: Job) -> None:
        job.kill_requested = True
        self.store.save(job, ("kill_requested",))
        self._send(job, {"op": "kill", "job": job.id})

    def copy_script(self, job: Job, argv: list[str], index: int) -> None:
        """Keep a private copy of the job's script, run instead of the original."""
        self.scripts.mkdir(mode=0o700, exist_ok=True)
        target = self.scripts / f"job_script.{job.id}"
        shutil.copyfile(argv[index] if os.path.isabs(argv[index])
                        else os.path.join(job.cwd, argv[index]), target)
        target.chmod(0o700)
        words = list(argv)
        words[index] = str(target)
        job.script_copy, job.run_command = str(target), "exec " + shlex.join(words)

    def fits_somewhere(self, cores: int, mem: float, attr: str | None) -> str | None:
        """Why no node could ever run this request, or None if one could (or we can't tell)."""
        nodes = list(self.nodes.values())
        if not nodes:
            return None
        expr = attrs.compile_expr(attr) if attr else None
        matching = [n for n in nodes
                    if expr is None or expr.matches(frozenset(n.get("attrs", ())), n["name"])]
        if not matching:
            return f"no node has the attributes {attr}"
        if any(cores <= n["cores"] and mem <= n["mem"] for n in matching):
            return None
        best = max(matching, key=lambda n: (n["cores"], n["mem"]))
        def cores_text(n: int) -> str:
            return f"{n} core{'' if n == 1 else 's'}"

        return (f"no node can ever run it: it asks for {cores_text(cores)} and {mem:g} GB, the "
                f"largest node ({best['name']}) has {cores_text(best['cores'])} and "
                f"{best['mem']:g} GB")

    def status(self) -> dict:
        self.link.wait_up(10.0)  # a fresh master may still be connecting
        try:
            return self.link.request({"type": "status"}, timeout=10.0)
        except LinkDown as exc:
            return {"ok": False, "error": f"the multiuser is not reachable: {exc}"}
