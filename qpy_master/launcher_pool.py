"""The master's launchers, one per node, and what to do when a node cannot be reached.

A launcher is started on a node's first use (locally as a child, remotely at the end of
an ssh session) and its first op sweeps away what this user left there that the master
no longer runs. When a launcher ends after a working session it is started again at once
and re-adopts the node's jobs; when connecting fails, the node is *unreachable* for this
user: new jobs avoid it and it is tried again later, backing off.

Every method runs under the master's lock; the pool's own threads (link callbacks and
retry timers) take that lock before they touch anything, and report to the master only
through the ``PoolOwner`` callbacks, so this module never imports the master.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Protocol

from qpy import cgroups, limits, ssh
from qpy.model import Job
from qpy_master import launcher as launcher_module
from qpy_master.launcher_link import LauncherGone, LauncherLink

log = logging.getLogger("qpy.master.launchers")
LAUNCHER = Path(launcher_module.__file__)
LIMITS = Path(limits.__file__)
CGROUPS = Path(cgroups.__file__)
RETRY_FIRST, RETRY_MAX = 0.5, 30.0  # seconds between attempts to reach an unreachable node
HEALTHY_AFTER = 1.0  # a session that worked this long ended by accident: reconnect at once
PING_INTERVAL = launcher_module.LINK_TIMEOUT / 3  # the launchers' sign that the master is there


def launcher_command(run_dir: str, setting: str | None = None,
                     python: str = "python3") -> tuple[list[str], bytes]:
    """The launcher's command line and what to write to its stdin first (its source and
    those of the modules it imports), the same on this machine (with this ``python``) and at
    the end of an ssh session; ``setting`` is the node's ``cgroup`` setting, which may put
    it behind ``systemd-run``."""
    argv = [*cgroups.launcher_prefix(setting),
            *ssh.python_stdin_program("qpy-launcher", python), run_dir]
    return argv, ssh.source_preamble(str(LAUNCHER), str(CGROUPS), str(LIMITS))


class PoolOwner(Protocol):
    """What the pool tells the master; each call is made under the master's lock."""

    nodes: dict[str, dict]  # the multiuser's node records by name

    def jobs_on(self, node: str) -> list[Job]: ...

    def unsettled_on(self, node: str) -> list[int]: ...

    def env(self, env_id: int | None) -> dict[str, str]: ...

    def launcher_event(self, node: str, event: dict) -> None: ...

    def start_failed(self, job: Job, why: str) -> None: ...

    def reachable(self, node: str) -> None: ...

    def unreachable(self, node: str, reason: str) -> None: ...


class LauncherPool:
    """Links to the launchers by node, their addresses, and the nodes out of reach."""

    def __init__(self, home: Path, lock: threading.RLock, owner: PoolOwner) -> None:
        self.home, self.lock, self.owner = home, lock, owner
        self.links: dict[str, LauncherLink] = {}
        self.addresses: dict[str, str] = {}
        self.unreachable: dict[str, str] = {}  # node -> why this user cannot reach it now
        self.failures: dict[str, int] = {}
        self.envs_sent: dict[str, set[int]] = {}
        self.closed = False
        self.stopped = threading.Event()
        threading.Thread(target=self._ping, name="launcher-pings", daemon=True).start()

    def close(self) -> None:
        """End the launchers (not their jobs: the next master adopts those)."""
        self.closed = True
        self.stopped.set()
        links, self.links = list(self.links.values()), {}
        for link in links:
            link.close()

    # -- sending ops -------------------------------------------------------------------------

    def send_op(self, job: Job, op: dict) -> None:
        """Send an op about ``job`` to its node's launcher, one JSON line on its stdin;
        LauncherGone if it cannot be reached now."""
        self.link(job).post(op)

    def send_env(self, job: Job) -> None:
        """Give the node's launcher the job's submission environment unless it has it."""
        link = self.link(job)
        sent = self.envs_sent.setdefault(job.node, set())
        if job.env_id not in sent:
            link.post({"op": "env", "id": job.env_id, "env": self.owner.env(job.env_id)})
            sent.add(job.env_id)

    def tell(self, node: str | None, op: dict) -> None:
        """Best effort: an op for a launcher that exists now, connected or connecting
        (a launcher started later sweeps what it no longer needs)."""
        link = self.links.get(node)
        if link is not None:
            try:
                link.post(op)
            except LauncherGone:
                pass

    def post(self, node: str, address: str, op: dict) -> None:
        """Best effort: an op for the launcher of ``node`` (at ``address``), started now
        if there is none (a multi-node job's other nodes have no job of their own)."""
        try:
            link = self.links.get(node)
            if link is None and node not in self.unreachable:
                link = self._connect(node, address)
            if link is not None:
                link.post(op)
        except LauncherGone as exc:
            log.warning("node %s: %s not sent: %s", node, op.get("op"), exc)

    def link(self, job: Job) -> LauncherLink:
        """The launcher of the job's node, started on first use. The node's address was
        stored with the job at launch, so a restarted master finds it before it has
        heard from the multiuser."""
        link = self.links.get(job.node)
        if link is not None:
            return link
        if job.node in self.unreachable:
            raise LauncherGone(f"node {job.node} is unreachable: {self.unreachable[job.node]}")
        try:
            return self._connect(job.node, job.address or job.node)
        except LauncherGone as exc:
            self._mark_unreachable(job.node, str(exc))
            raise

    # -- what the master asks about nodes ----------------------------------------------------

    def session_works(self, node: str) -> bool:
        """Whether this master's own session to ``node`` is up (the node's jobs go on even
        if the multiuser cannot reach it)."""
        link = self.links.get(node)
        return link is not None and link.ready and link.proc.poll() is None

    def node_up(self, node: str) -> None:
        """The multiuser sees ``node`` again: try it now, sweeping what survived there."""
        self.unreachable.pop(node, None)
        if node not in self.links and node in self.addresses:
            self.reattach(node)

    def avoiding(self, want: list[dict]) -> list[dict]:
        """Slot requests that keep off the nodes this user cannot reach right now, by
        adding ``and not (node ...)`` to each request's attribute expression."""
        if not self.unreachable:
            return want
        avoid = "not (" + " or ".join(sorted(self.unreachable)) + ")"
        return [{**g, "attr": f"({g['attr']}) and {avoid}" if g.get("attr") else avoid}
                for g in want]

    def reach(self, nodes: dict[str, str | None]) -> None:
        """Start a launcher on each of ``nodes`` (name -> address) not reached yet."""
        for node, address in nodes.items():
            if node not in self.links:
                self.addresses.setdefault(node, address or node)
                self.reattach(node)

    def reattach(self, node: str) -> None:
        """A new launcher for ``node`` adopts its running jobs and gets their kills again."""
        jobs = self.owner.jobs_on(node)
        address = next((j.address for j in jobs if j.address), None) \
            or self.addresses.get(node) or node
        try:
            link = self._connect(node, address)
            for job in jobs:
                link.post({"op": "adopt", "job": job.id})
                if job.kill_requested:
                    link.post({"op": "kill", "job": job.id})
        except LauncherGone as exc:
            self._mark_unreachable(node, str(exc))

    # -- launchers coming and going ----------------------------------------------------------

    def _connect(self, node: str, address: str) -> LauncherLink:
        """Start the node's launcher (connecting happens in the link's thread). Its first
        op sweeps away whatever of this user's is left there that is not running here."""
        remote = not ssh.is_local(node, address)
        argv, preamble = launcher_command(str(self.home / "run" / node),
                                          self.owner.nodes.get(node, {}).get("cgroup"),
                                          "python3" if remote else sys.executable)
        if remote:
            try:
                argv = ssh.command(address, argv, str(self.home))
            except (OSError, subprocess.SubprocessError) as exc:
                raise LauncherGone(f"cannot run ssh for {node}: {exc}") from None
        link = LauncherLink(node, argv, preamble, self._on_event, self._on_ready,
                            self._on_exit, remote)
        self.links[node] = link
        self.addresses[node] = address
        self.envs_sent[node] = set()
        link.post({"op": "sweep", "keep": [j.id for j in self.owner.jobs_on(node)],
                   "ask": self.owner.unsettled_on(node)})
        return link

    def _ping(self) -> None:
        """Tell every launcher now and then that its master is still there: one that hears
        nothing for a while ends (``launcher.LINK_TIMEOUT``), so a session whose network
        went away leaves nothing behind on the node."""
        while not self.stopped.wait(PING_INTERVAL):
            with self.lock:
                links = [link for link in self.links.values() if link.ready]
            for link in links:
                try:
                    link.post({"op": "ping"})
                except LauncherGone:
                    pass

    def _on_event(self, node: str, event: dict) -> None:
        with self.lock:
            self.owner.launcher_event(node, event)

    def _on_ready(self, node: str, link: LauncherLink) -> None:
        with self.lock:
            self.failures.pop(node, None)
            if self.unreachable.pop(node, None) is not None:
                log.info("node %s is reachable again", node)
                self.owner.reachable(node)

    def _on_exit(self, node: str, link: LauncherLink) -> None:
        """A launcher (or its ssh session) ended. Starts that never reached it fail. After
        a working session, reconnect at once and re-adopt the node's jobs; after a failed
        connection, the node is unreachable for now."""
        with self.lock:
            if self.closed or self.links.get(node) is not link:
                return
            del self.links[node]
            for job in self.owner.jobs_on(node):
                if job.id in link.unsent_starts:
                    self.owner.start_failed(job, f"not started: {link.reason}")
            if link.ready and time.monotonic() - (link.ready_at or 0) > HEALTHY_AFTER:
                self.reattach(node)
                return
            self._mark_unreachable(node, link.reason)
            self.owner.unreachable(node, link.reason)

    def _mark_unreachable(self, node: str, reason: str) -> None:
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
            if not self.closed and node in self.unreachable and node not in self.links:
                self.reattach(node)
