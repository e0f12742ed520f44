"""The one job model: the record every tier exchanges (statuses live in ``qpy.states``)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from qpy.defaults import DEFAULT_CORES, DEFAULT_MEM, DEFAULT_UMASK


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
    umask: int = DEFAULT_UMASK  # the submitter's: the job and its output files get it
    # limits and accounting: wall-time limit (s, None: none); the last run's CPU time (s)
    # and peak memory (GB, max RSS of its tree)
    time_limit: int | None = None
    cpu: float | None = None
    peak_mem: float | None = None
    # Queue semantics (issue 13): order, hold, dependencies, arrays.
    priority: int = 0  # a new job goes after the last queued job of equal or higher priority
    held: bool = False  # queued, but not to be started until released
    after: list[int] = field(default_factory=list)  # starts once these ended
    afterok: list[int] = field(default_factory=list)  # ... once these ended done, exit 0
    array_id: int | None = None  # the first task's ID, for every task of an array
    array_index: int | None = None
    array_max: int | None = None  # at most this many tasks of the array run at once
    mail: str | None = None  # sub --mail: "end", "fail" or "end,fail"
    # sub --exclusive / -N K: n_nodes whole nodes (exclusive is K=1); n_cores and mem
    # become the first node's when it starts, nodes the names of all (the first runs the
    # command), span what the master keeps of the others (addresses, cores, run tag)
    exclusive: bool = False
    n_nodes: int = 1
    nodes: list[str] | None = None
    span: dict | None = None
    # interactive sessions (qpy connect): kind "tmux" or "gui" (None: a batch job), the
    # session's name, since when it is idle (this host's clock), and what its node reported
    # of it (socket, display, attached clients, ready, error)
    kind: str | None = None
    name: str | None = None
    idle_since: float | None = None
    session: dict | None = None

    def output(self, which: str) -> str:
        """``job_<ID>.out`` or ``.err`` in the submission directory."""
        return os.path.join(self.cwd, f"job_{self.id}.{which}")

    @property
    def shape(self) -> tuple[int, float, str | None, bool, int]:
        """Jobs with the same shape compete for the same kind of slot."""
        return (self.n_cores, self.mem, self.attr, self.exclusive, self.n_nodes)

    def public(self, position: int | None = None) -> dict:
        """The fields a user sees (``qpy check``, ``--json``), with the job's place in
        the queue if it is queued (the queue knows it, not the job); a plain copy, not
        asdict's deep copy, because check of 10,000 jobs builds 10,000 of these."""
        record = dict(self.__dict__)
        for name in PRIVATE:
            del record[name]
        record["position"] = position
        return record


PRIVATE = ("env_id", "pid", "kill_requested", "script_copy", "run_command", "address",
           "umask", "span")

# One run of a job as ``qpy history`` keeps it (the master's runs table, --json's runs).
RUN_FIELDS = ("job", "run", "status", "command", "cwd", "n_cores", "mem", "node", "t_queue",
              "t_start", "t_end", "exit_code", "signal", "reason", "time_limit", "cpu",
              "peak_mem")
