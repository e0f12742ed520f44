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
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from qpy import attrs, config, ssh
from qpy.model import DONE, KILLED, LOST, QUEUE, RUNNING, Job
from qpy_master import launcher as launcher_module
from qpy_master.multiuser_link import LinkDown, MultiuserLink
from qpy_master.queue import JobQueue
from qpy_master.runner import LauncherGone, Runner
from qpy_master.store import Store

log = logging.getLogger("qpy.master")
LAUNCHER = Path(launcher_module.__file__)
RETRY_FIRST, RETRY_MAX = 0.5, 30.0  # seconds between attempts to reach an unreachable node


def _output(job: Job, which: str) -> str:
    """``job_<ID>.out`` or ``.err`` in the submission directory."""
    return os.path.join(job.cwd, f"job_{job.id}.{which}")


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
        self.addresses: dict[str, str] = {}
        self.unreachable: dict[str, str] = {}  # node -> why this user cannot reach it now
        self.failures: dict[str, int] = {}
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
        self.running = {job.id: job for job in running}  # all known before the first sweep
        for job in running:
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
                    self.unreachable.pop(name, None)
                    if name not in self.runners and name in self.addresses:
                        self._reattach(name)  # sweeps what survived there

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
            want = [] if self.paused else self._avoiding(self.queue.want())
            queue_size = len(self.queue)
        if not release and not want:
            return
        try:
            reply = self.link.request({"type": "slots", "release": release, "want": want,
                                       "queue_size": queue_size})
        except LinkDown:
            self._keep_releases(release)  # a release for a job the hello left out is
            return                        # harmless; a release lost would hold its core
        if not reply.get("ok"):
            log.error("slot request refused: %s", reply.get("error"))
            self._keep_releases(release)
            return
        grants = reply.get("grants") or []
        with self.lock:
            for grant in grants:
                self._launch(grant)
        if grants and reply.get("more"):
            self.wake.set()

    def _keep_releases(self, release: list[int]) -> None:
        with self.lock:
            self.release[:0] = release

    def _avoiding(self, want: list[dict]) -> list[dict]:
        """Ask for slots anywhere but on the nodes this user cannot reach right now, by
        adding ``and not (node ...)`` to each request's attribute expression."""
        if not self.unreachable:
            return want
        avoid = "not (" + " or ".join(sorted(self.unreachable)) + ")"
        return [{**g, "attr": f"({g['attr']}) and {avoid}" if g.get("attr") else avoid}
                for g in want]

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
            "out": _output(job, "out"), "err": _output(job, "err")})

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
        runner = self.runners.get(job.node)
        if runner is not None:
            return runner
        if job.node in self.unreachable:
            raise LauncherGone(f"node {job.node} is unreachable: {self.unreachable[job.node]}")
        address = job.address or self.nodes.get(job.node, {}).get("address") or job.node
        try:
            return self._connect(job.node, address)
        except LauncherGone as exc:
            self._unreachable(job.node, str(exc))
            raise

    def _connect(self, node: str, address: str) -> Runner:
        """Start the node's launcher (connecting happens in the runner's thread). Its first
        op sweeps away whatever of this user's is left there that is not running here."""
        run_dir = str(self.run_dir / node)
        if address in ssh.LOCAL_ADDRESSES or node in ssh.LOCAL_ADDRESSES:
            argv, preamble = [sys.executable, "-S", "-u", str(LAUNCHER), run_dir], None
        else:
            try:
                argv = ssh.command(address, [*ssh.python_stdin_program("qpy-launcher"),
                                             run_dir], str(self.home))
            except (OSError, subprocess.SubprocessError) as exc:
                raise LauncherGone(f"cannot run ssh for {node}: {exc}") from None
            preamble = ssh.source_preamble(str(LAUNCHER))
        runner = Runner(node, argv, preamble, self._on_launcher_event, self._on_runner_ready,
                        self._on_launcher_exit)
        self.runners[node] = runner
        self.addresses[node] = address
        runner.post({"op": "sweep", "keep": [j.id for j in self._jobs_on(node)]})
        return runner

    def _jobs_on(self, node: str) -> list[Job]:
        return [j for j in self.running.values() if j.node == node]

    def _send(self, job: Job, op: dict) -> None:
        """Send an op about ``job`` to its node's launcher. If the node cannot be reached,
        a job that was about to start goes back to the queue, and a running one stays
        running until the node is back (its ops are sent again then) or declared down."""
        try:
            self._runner(job).post(op)
        except LauncherGone as exc:
            log.error("job %d: %s", job.id, exc)
            if job.status == RUNNING and op["op"] == "start":
                self._requeue(job, f"not started: {exc}")

    def _on_runner_ready(self, node: str, runner: Runner) -> None:
        with self.lock:
            self.failures.pop(node, None)
            if self.unreachable.pop(node, None) is not None:
                log.info("node %s is reachable again", node)
                self.wake.set()

    def _on_launcher_exit(self, node: str, runner: Runner) -> None:
        """A launcher (or its ssh session) ended. Start-ups that never reached it go back
        to the queue. After a working session, reconnect at once and re-adopt the node's
        jobs; after a failed connection, mark the node unreachable for this user's new
        jobs and try again later, backing off."""
        with self.lock:
            if self.stopping or self.runners.get(node) is not runner:
                return
            del self.runners[node]
            for job in self._jobs_on(node):
                if job.id in runner.unsent_starts:
                    self._requeue(job, f"not started: {runner.reason}")
            healthy = runner.ready and time.monotonic() - (runner.ready_at or 0) > 1.0
            if healthy:
                self._reattach(node)
                return
            self._unreachable(node, runner.reason)
            if self.nodes.get(node, {}).get("state") == "down":
                self._node_down(node, str(self.nodes[node].get("reason") or runner.reason))

    def _unreachable(self, node: str, reason: str) -> None:
        """Keep this user's new jobs off ``node`` and try it again later, backing off."""
        self.failures[node] = failures = self.failures.get(node, 0) + 1
        self.unreachable[node] = reason
        delay = min(RETRY_MAX, RETRY_FIRST * 2 ** (failures - 1))
        log.warning("node %s unreachable (%s); retrying in %.1f s", node, reason, delay)
        timer = threading.Timer(delay, self._retry, args=(node,))
        timer.daemon = True
        timer.start()

    def _retry(self, node: str) -> None:
        with self.lock:
            if not self.stopping and node in self.unreachable and node not in self.runners:
                self._reattach(node)

    def _reattach(self, node: str) -> None:
        """A new launcher for ``node`` adopts its running jobs and gets their kills again."""
        jobs = self._jobs_on(node)
        address = next((j.address for j in jobs if j.address), None) \
            or self.addresses.get(node) or node
        try:
            runner = self._connect(node, address)
            for job in jobs:
                runner.post({"op": "adopt", "job": job.id})
                if job.kill_requested:
                    runner.post({"op": "kill", "job": job.id})
        except LauncherGone as exc:
            self._unreachable(node, str(exc))

    def _on_launcher_event(self, node: str, event: dict) -> None:
        kind = event.get("ev")
        if kind in ("ready", "error"):
            log.log(logging.ERROR if kind == "error" else logging.DEBUG, "launcher %s: %s",
                    node, event)
            return
        with self.lock:
            job = self.running.get(event.get("job"))
            if job is None or job.node != node:
                return
            if kind == "started":  # kept in memory, stored with the end: the run file has it
                job.pid = event.get("pid")
                job.t_start = event.get("t") or job.t_start
            elif kind == "ended":
                self._finish(job, KILLED if job.kill_requested else DONE,
                             exit_code=event.get("exit"), signal=event.get("signal"),
                             reason=self._start_error(job, event.get("error"), event.get("in")),
                             t_end=event.get("t_end"))
            elif kind == "lost":
                why = f"lost on {node}: {event.get('reason')}"
                if event.get("ran") and job.requeue and not job.kill_requested:
                    self._requeue(job, why)
                elif event.get("ran"):
                    self._finish(job, LOST, reason=why)
                else:
                    self._requeue(job, "its start never reached the node")

    @staticmethod
    def _start_error(job: Job, error: object, where: object) -> str | None:
        """The reason of a job that could not start, from the supervisor's short record."""
        if not error:
            return None
        if where == "cwd":
            return (f"failed to start: the submission directory {job.cwd} cannot be used on "
                    f"{job.node} ({error}); qpy needs it visible on the nodes, as with "
                    "shared home directories")
        if where in ("out", "err"):
            return f"failed to start: {error}: {_output(job, where)}"
        return f"failed to start: {error}"

    def _node_down(self, node: str, reason: str) -> None:
        """The multiuser declared ``node`` down: its jobs are lost, or queued again if they
        asked for that. Whatever of them still runs there is killed (now if the launcher
        can be reached, else by the sweep when the node is back)."""
        runner = self.runners.get(node)
        if runner is not None and runner.ready and runner.proc.poll() is None:
            log.warning("node %s is down for the multiuser (%s) but this master's session "
                        "to it works: its jobs go on", node, reason)
            return
        for job in self._jobs_on(node):
            self._tell_runner(node, {"op": "kill", "job": job.id})  # waits if connecting
            text = f"node {node} went down: {reason}"
            if job.requeue and not job.kill_requested:
                self._requeue(job, text)
            else:
                self._finish(job, KILLED if job.kill_requested else LOST, reason=text)

    def _requeue(self, job: Job, why: str) -> None:
        """Back to the head of the queue: the job never ran, or asked to run again."""
        log.warning("job %d goes back to the queue: %s", job.id, why)
        self._tell_runner(job.node, {"op": "forget", "job": job.id})
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
        self._tell_runner(job.node, {"op": "forget", "job": job.id})

    def _tell_runner(self, node: str | None, op: dict) -> None:
        """Best effort: an op for a launcher that exists now, connected or connecting
        (a launcher started later sweeps what it no longer needs)."""
        runner = self.runners.get(node)
        if runner is not None:
            try:
                runner.post(op)
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
        if any(not n["cores"] or (cores <= n["cores"] and mem <= (n["mem"] or mem))
               for n in matching):
            return None  # fits, or a node whose size is not known yet might fit
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
