"""The one job model: statuses, allowed transitions and the record every tier exchanges."""

from __future__ import annotations

from dataclasses import dataclass, fields

from qpy.selection import FINISHED, STATUSES  # noqa: F401 - the one list, re-exported

# LOST: its node went down while it ran (Slurm's NODE_FAIL); never reported as done.
QUEUE, RUNNING, DONE, KILLED, UNDONE, LOST = STATUSES

# Every status change goes through Job.move, which refuses anything not listed here.
TRANSITIONS: dict[str, tuple[str, ...]] = {
    QUEUE: (RUNNING, UNDONE),
    # back to queue when the launch never happened, or its node failed and it asked for that
    RUNNING: (DONE, KILLED, LOST, QUEUE),
    DONE: (),
    KILLED: (),
    UNDONE: (),
    LOST: (),
}

from qpy.defaults import DEFAULT_CORES, DEFAULT_MEM  # noqa: E402 - re-exported for the tiers


class TransitionError(Exception):
    """A status change the job model does not allow: a bug, never user input."""


@dataclass
class Job:
    """A job as stored by the master and shown by ``qpy check``."""

    id: int
    status: str
    command: str
    cwd: str
    n_cores: int = DEFAULT_CORES
    mem: float = DEFAULT_MEM
    attr: str | None = None
    node: str | None = None
    address: str | None = None
    t_queue: float = 0.0
    t_start: float | None = None
    t_end: float | None = None
    exit_code: int | None = None
    signal: int | None = None
    reason: str | None = None
    notes: str | None = None
    script_copy: str | None = None
    run_command: str | None = None
    env_id: int | None = None
    pid: int | None = None
    kill_requested: bool = False
    requeue: bool = False  # run it again from the queue if its node fails (sub --requeue)

    def move(self, status: str) -> None:
        """Change status, refusing transitions the model forbids."""
        if status not in TRANSITIONS[self.status]:
            raise TransitionError(f"job {self.id}: {self.status} -> {status} is not allowed")
        self.status = status

    @property
    def shape(self) -> tuple[int, float, str | None]:
        """Jobs with the same shape compete for the same kind of slot."""
        return (self.n_cores, self.mem, self.attr)

    def public(self) -> dict:
        """The fields a user sees (``qpy check``, ``--json``); a plain copy, not asdict's
        deep copy, because check of 10,000 jobs builds 10,000 of these."""
        return {name: getattr(self, name) for name in PUBLIC}


PUBLIC = tuple(f.name for f in fields(Job) if f.name not in (
    "env_id", "pid", "kill_requested", "script_copy", "run_command", "address"))
