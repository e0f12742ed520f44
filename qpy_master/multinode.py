"""Jobs on several whole nodes (``qpy sub -N K``): what the master adds to such a job.

The multiuser grants all K nodes at once; the job runs its command on the first one, and
the others are the job's to use over ssh (an MPI launcher, or the user's script), where
nothing it starts is a child of qpy's supervisor. So each run carries a marker in its
environment, ``QPY_RUN_TAG`` (random, per run, kept in the job's record), which the
job's rsh agent (``qpy/rsh.py``, ``$QPY_RSH``) hands on to what it starts on a node.
When the run ends, however it ends, and when the job is killed, every node's launcher
ends this user's processes there that carry the marker (launcher op ``reap``).

Before the start the master writes the job's node file (``QPY_NODEFILE``: each node's
address once per core granted there, the first node first) into the user's qpy home
(``hosts/``, shared with the nodes as the submission directories are), and removes it
when the run ends.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Callable
from pathlib import Path

from qpy import rsh
from qpy.model import Job
from qpy.states import RUNNING
from qpy_master.launcher_pool import LauncherPool

log = logging.getLogger("qpy.master.multinode")
AGENT = "qpy-rsh"
AGENT_VARS = ("QPY_RSH", "OMPI_MCA_plm_rsh_agent", "HYDRA_LAUNCHER_EXEC")


def grant_fields(grant: dict) -> dict:
    """What a job's record gets from a grant of several nodes (none for one node): the
    nodes' names, and their addresses, cores and memory with a new run's marker."""
    others = grant.get("others") or []
    if not others:
        return {}
    parts = [grant, *others]
    return {"nodes": [p["node"] for p in parts],
            "span": {"addresses": [p["address"] for p in parts],
                     "cores": [p["cores"] for p in parts], "mem": [p["mem"] for p in parts],
                     "tag": secrets.token_hex(12)}}


def node_lines(job: Job) -> str:
    """The node file: each node's address once per core it has for the job, in order."""
    span = job.span or {}
    return "".join(f"{address}\n" * cores
                   for address, cores in zip(span["addresses"], span["cores"], strict=True))


class MultiNode:
    """The running multi-node jobs' marks, node files and the ends of their runs."""

    def __init__(self, home: Path, pool: LauncherPool, grace: Callable[[], float]) -> None:
        self.dir = home / "hosts"
        self.pool, self.grace = pool, grace
        self.live: dict[int, Job] = {}  # running multi-node jobs, with what they ran on
        self.down: dict[int, str] = {}  # why a job was killed: one of its nodes went down

    def adopt(self, job: Job) -> None:
        """A running job of a restarted master."""
        if job.span:
            self.live[job.id] = _snapshot(job)

    def vars(self, job: Job, env: dict[str, str]) -> dict[str, str]:
        """Write the job's node file (and the agent), and return the variables its
        start adds: nothing for a job on one node. The MPI launchers' agent variables
        are left alone if the submission environment (``env``) has them."""
        if not job.span:
            return {}
        self.adopt(job)
        hosts, agent = self.node_file(job), str(self.dir / AGENT)
        try:
            self.dir.mkdir(mode=0o700, exist_ok=True)
            self._write_agent()
            fd = os.open(hosts, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(node_lines(job))
        except OSError as exc:  # the job starts all the same; its error output says why
            log.error("job %d: cannot write its node file or rsh agent: %s", job.id, exc)
        return {"QPY_NODES": ",".join(job.nodes or []), "QPY_NODEFILE": str(hosts),
                "QPY_RUN_TAG": job.span["tag"],
                **{name: agent for name in AGENT_VARS if name not in env}}

    def node_file(self, job: Job) -> Path:
        return self.dir / f"job_{job.id}.hosts"

    def _write_agent(self) -> None:
        """The rsh agent in the user's qpy home, written again if qpy's differs."""
        path = self.dir / AGENT
        source = Path(rsh.__file__).read_bytes()
        try:
            same = path.read_bytes() == source
        except OSError:
            same = False
        if not same:
            temp = path.with_name(f".{AGENT}.{os.getpid()}")
            temp.write_bytes(source)
            temp.chmod(0o700)
            temp.replace(path)

    def killed(self, job: Job) -> None:
        """A kill of a running job: its processes on the other nodes end now (the first
        node's go with its supervisor, and all nodes are swept again at the end)."""
        kept = self.live.get(job.id)
        if kept is not None:
            self._reap(kept, 1)

    def moved(self, job: Job) -> None:
        """A ``Records.on_move`` hook: a multi-node job whose run is over (ended, lost,
        queued again) has what it left on its nodes ended, and its node file removed."""
        kept = self.live.get(job.id) if job.status != RUNNING else None
        if kept is None:
            return
        del self.live[job.id]
        self._reap(kept, 0)
        try:
            os.unlink(self.node_file(kept))
        except FileNotFoundError:
            pass

    def node_down(self, node: str, why: str) -> list[int]:
        """``node`` went down: the running jobs that use it besides their first node,
        which are then killed with ``why`` as their reason."""
        ids = [job.id for job in self.live.values() if node in (job.nodes or [])[1:]]
        self.down.update((job, why) for job in ids)
        return ids

    def end_reason(self, job: Job) -> str | None:
        return self.down.pop(job.id, None)

    def _reap(self, job: Job, first: int) -> None:
        """The ``reap`` op to the job's nodes from ``first`` on (0: all of them)."""
        op = {"op": "reap", "tag": job.span["tag"], "grace": float(self.grace())}
        for node, address in list(zip(job.nodes, job.span["addresses"], strict=True))[first:]:
            self.pool.post(node, address, op)


def _snapshot(job: Job) -> Job:
    """What the ends need of a job, kept apart from the record (a run queued again
    loses its nodes in the record before the hook hears of it)."""
    return Job(id=job.id, status=job.status, command="", cwd="", nodes=list(job.nodes or []),
               span=dict(job.span or {}))
