"""The master's SQLite store: job records, notes, settings and submission environments.

WAL with synchronous=NORMAL: a committed job survives a SIGKILL of the master (the WAL is
in the OS cache), and a commit costs microseconds. IDs use AUTOINCREMENT, so an ID is never
handed out twice, even after ``clean`` removed the highest ones.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from qpy import selection
from qpy.model import RUN_FIELDS, Job
from qpy.states import QUEUE, RUNNING, check_transition
from qpy_master.side_tables import SideTables, from_db, to_db

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    status TEXT NOT NULL,
    command TEXT NOT NULL,
    cwd TEXT NOT NULL,
    n_cores INTEGER NOT NULL,
    mem REAL NOT NULL,
    attr TEXT,
    node TEXT,
    address TEXT,
    t_queue REAL NOT NULL,
    t_start REAL,
    t_end REAL,
    exit_code INTEGER,
    signal INTEGER,
    reason TEXT,
    script_copy TEXT,
    run_command TEXT,
    env_id INTEGER,
    pid INTEGER,
    kill_requested INTEGER NOT NULL DEFAULT 0,
    qpos REAL NOT NULL DEFAULT 0,
    requeue INTEGER NOT NULL DEFAULT 0,
    umask INTEGER NOT NULL DEFAULT 18,
    time_limit INTEGER,
    cpu REAL,
    peak_mem REAL,
    priority INTEGER NOT NULL DEFAULT 0,
    held INTEGER NOT NULL DEFAULT 0,
    array_id INTEGER,
    array_index INTEGER,
    array_max INTEGER,
    mail TEXT,
    exclusive INTEGER NOT NULL DEFAULT 0,
    kind TEXT,
    name TEXT,
    idle_since REAL,
    session TEXT,
    n_nodes INTEGER NOT NULL DEFAULT 1,
    nodes TEXT,
    span TEXT
);
CREATE INDEX IF NOT EXISTS jobs_live ON jobs(status) WHERE status IN ('queue', 'running');
CREATE TABLE IF NOT EXISTS notes (job INTEGER NOT NULL, t REAL NOT NULL, text TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS notes_job ON notes(job);
CREATE TABLE IF NOT EXISTS envs (id INTEGER PRIMARY KEY, digest TEXT UNIQUE NOT NULL,
                                 env TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS unsettled (job INTEGER PRIMARY KEY, node TEXT NOT NULL,
                                      address TEXT);
CREATE TABLE IF NOT EXISTS deps (job INTEGER NOT NULL, dep INTEGER NOT NULL,
                                 ok INTEGER NOT NULL, PRIMARY KEY (job, dep)) WITHOUT ROWID;
-- accounting: one row per run that ended, written with the end, kept by clean
CREATE TABLE IF NOT EXISTS runs (
    job INTEGER NOT NULL, run INTEGER NOT NULL, status TEXT NOT NULL, command TEXT NOT NULL,
    cwd TEXT NOT NULL, n_cores INTEGER NOT NULL, mem REAL NOT NULL, node TEXT,
    t_queue REAL NOT NULL, t_start REAL, t_end REAL NOT NULL, exit_code INTEGER,
    signal INTEGER, reason TEXT, time_limit INTEGER, cpu REAL, peak_mem REAL,
    line TEXT NOT NULL  -- its line of ``qpy history``, written when it ended
);
CREATE INDEX IF NOT EXISTS runs_job ON runs(job);
CREATE INDEX IF NOT EXISTS runs_end ON runs(t_end);
"""
# Columns later versions added to ``jobs``: a store written before them gets them in place.
ADDED_COLUMNS = {
    "requeue": "INTEGER NOT NULL DEFAULT 0",
    "umask": "INTEGER NOT NULL DEFAULT 18",  # 0o022, what jobs were created with before
    "time_limit": "INTEGER", "cpu": "REAL", "peak_mem": "REAL",
    # the queue's semantics (issue 13)
    "priority": "INTEGER NOT NULL DEFAULT 0",
    "held": "INTEGER NOT NULL DEFAULT 0",
    "array_id": "INTEGER",
    "array_index": "INTEGER",
    "array_max": "INTEGER",
    "mail": "TEXT", "exclusive": "INTEGER NOT NULL DEFAULT 0",
    # interactive sessions (qpy connect)
    "kind": "TEXT", "name": "TEXT", "idle_since": "REAL", "session": "TEXT",
    # multi-node jobs (-N): how many, their names and the rest (JSON)
    "n_nodes": "INTEGER NOT NULL DEFAULT 1", "nodes": "TEXT", "span": "TEXT",
}

COLUMNS = ("id", "status", "command", "cwd", "n_cores", "mem", "attr", "node", "address",
           "t_queue",
           "t_start", "t_end", "exit_code", "signal", "reason", "script_copy", "run_command",
           "env_id", "pid", "kill_requested", "requeue", "umask", "time_limit", "cpu",
           "peak_mem", "priority", "held", "array_id", "array_index", "array_max", "mail",
           "exclusive", "kind", "name", "idle_since", "session", "n_nodes", "nodes", "span")
FLAGS = ("kill_requested", "requeue", "held", "exclusive")  # stored as 0/1
JSON_FIELDS = ("session", "nodes", "span")
FIELDS = ", ".join(COLUMNS)
SELECT = f"SELECT {FIELDS} FROM jobs"


def _job(row: tuple) -> Job:
    """A job from its row (check of 10,000 jobs makes 10,000: kept lean)."""
    fields = dict(zip(COLUMNS, row, strict=True))
    if bytes in map(type, row):  # rare: text that is not UTF-8
        fields = {name: from_db(value) for name, value in fields.items()}
    for flag in FLAGS:
        fields[flag] = bool(fields[flag])
    job = Job(**fields)
    for name in JSON_FIELDS:  # kept as JSON text: a session, a multi-node job's nodes
        if getattr(job, name) is not None:
            setattr(job, name, json.loads(getattr(job, name)))
    return job


def _where(sel: dict, id_column: str = "id") -> tuple[str, tuple]:
    """SQL for a selection that ``qpy.selection.validate`` accepted: criteria are OR-ed."""
    if sel.get("all") or selection.is_empty(sel):
        return "1", ()
    clauses, params = [], []
    for column, key in ((id_column, "ids"), ("status", "statuses"), ("cwd", "dirs")):
        values = sel.get(key) or []
        for i in range(0, len(values), 500):
            chunk = values[i:i + 500]
            clauses.append(f"{column} IN ({', '.join('?' * len(chunk))})")
            params.extend(map(to_db, chunk))
    for low, high in sel.get("ranges") or []:
        clauses.append(f"{id_column} BETWEEN ? AND ?")
        params.extend((low, high))
    if sel.get("held"):  # the held jobs (of the runs table: their runs)
        held = "held = 1 AND status = 'queue'"
        clauses.append(f"({held})" if id_column == "id" else
                       f"{id_column} IN (SELECT id FROM jobs WHERE {held})")
    return " OR ".join(clauses), tuple(params)


class Store(SideTables):
    """All SQL of the master. Callers hold the master's state lock; one connection is shared."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)
        self._add_missing_columns()
        self._undo: list[Callable[[], None]] | None = None

    def _add_missing_columns(self) -> None:
        """A store written by an earlier qpy lacks the newer columns: add them in place."""
        have = {row[1] for row in self.db.execute("PRAGMA table_info(jobs)")}
        for name, kind in ADDED_COLUMNS.items():
            if name not in have:
                self.db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {kind}")

    def close(self) -> None:
        self.db.close()

    @contextlib.contextmanager
    def transaction(self, first_undo: Callable[[], None] | None = None) -> Iterator[None]:
        """Group writes into one commit. On any exception everything is rolled back,
        the records in memory too (through the undo actions registered with
        ``on_rollback``, run last to first: ``first_undo`` runs after all others), and
        the exception goes on. Nested uses join the outer one."""
        if self._undo is not None:
            yield
            return
        self._undo = [first_undo] if first_undo is not None else []
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            for undo in reversed(self._undo):
                undo()
            raise
        finally:
            self._undo = None

    def on_rollback(self, undo: Callable[[], None]) -> None:
        """Register how to take back an in-memory change if the transaction fails."""
        if self._undo is not None:
            self._undo.append(undo)

    def transition(self, job: Job, status: str, **fields: object) -> None:
        """The one way a job changes status: checked against the table, stored together
        with the fields that change with it, then applied to ``job``."""
        check_transition(job.id, job.status, status)
        old = {name: getattr(job, name) for name in ("status", *fields)}
        self._write(job.id, {"status": status, **fields})
        for name, value in {"status": status, **fields}.items():
            setattr(job, name, value)
        self.on_rollback(lambda: [setattr(job, n, v) for n, v in old.items()])

    def env_id(self, env: dict[str, str]) -> int:
        """Store a submission environment once, however many jobs share it."""
        text = json.dumps(env, sort_keys=True, separators=(",", ":"))
        digest = hashlib.sha256(text.encode()).hexdigest()
        row = self.db.execute("SELECT id FROM envs WHERE digest = ?", (digest,)).fetchone()
        if row:
            return row[0]
        return self.db.execute("INSERT INTO envs (digest, env) VALUES (?, ?)",
                               (digest, text)).lastrowid

    def env(self, env_id: int | None) -> dict[str, str]:
        if env_id is None:
            return {}
        row = self.db.execute("SELECT env FROM envs WHERE id = ?", (env_id,)).fetchone()
        return json.loads(row[0]) if row else {}

    def insert(self, job: Job, qpos: float) -> int:
        """Record a new queued job (and what it depends on) and return its ID."""
        cur = self.db.execute(
            "INSERT INTO jobs (status, command, cwd, n_cores, mem, attr, t_queue, run_command,"
            " env_id, qpos, requeue, umask, time_limit, priority, held, array_id,"
            " array_index, array_max, mail, exclusive, kind, name, n_nodes)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            tuple(map(to_db, (job.status, job.command, job.cwd, job.n_cores, job.mem, job.attr,
                              job.t_queue, job.run_command, job.env_id, qpos,
                              int(job.requeue), job.umask, job.time_limit, job.priority,
                              int(job.held), job.array_id, job.array_index, job.array_max,
                              job.mail, int(job.exclusive), job.kind, job.name,
                              job.n_nodes))))
        if job.after or job.afterok:
            self.db.executemany("INSERT OR IGNORE INTO deps (job, dep, ok) VALUES (?, ?, ?)",
                                [(cur.lastrowid, dep, 0) for dep in job.after]
                                + [(cur.lastrowid, dep, 1) for dep in job.afterok])
        return cur.lastrowid

    def update(self, job: Job, **fields: object) -> None:
        """Change fields of a job that are not its status (``transition`` does that)."""
        if "status" in fields:
            raise ValueError("a status changes only through transition()")
        old = {name: getattr(job, name) for name in fields}
        self._write(job.id, fields)
        for name, value in fields.items():
            setattr(job, name, value)
        self.on_rollback(lambda: [setattr(job, n, v) for n, v in old.items()])

    def _write(self, job_id: int, fields: dict[str, object]) -> None:
        unknown = set(fields) - set(COLUMNS)
        if unknown:
            raise ValueError(f"no such job field: {sorted(unknown)[0]}")
        values = [int(v) if isinstance(v, bool) else json.dumps(v)
                  if isinstance(v, (dict, list)) else to_db(v) for v in fields.values()]
        sets = ", ".join(f"{n} = ?" for n in fields)
        self.db.execute(f"UPDATE jobs SET {sets} WHERE id = ?", (*values, job_id))

    def set_qpos(self, order: Iterable[tuple[float, int]]) -> None:
        """Persist queue positions as (qpos, id) pairs, e.g. after a jump."""
        self.db.executemany("UPDATE jobs SET qpos = ? WHERE id = ?", order)

    def live(self) -> tuple[list[tuple[Job, int]], list[Job]]:
        """Queued jobs with their positions in queue order, and running jobs: what a
        restarted master rebuilds its memory from."""
        queued = [(_job(r[:-1]), r[-1]) for r in self.db.execute(
            f"SELECT {FIELDS}, qpos FROM jobs WHERE status = ? ORDER BY qpos, id", (QUEUE,))]
        running = [_job(r) for r in self.db.execute(f"{SELECT} WHERE status = ?", (RUNNING,))]
        self._add_deps([job for job, _ in queued])
        return queued, running

    def select(self, sel: dict, statuses: tuple[str, ...] = ()) -> list[Job]:
        """Jobs matching a validated selection (and, if given, one of ``statuses``), by ID."""
        where, params = _where(sel)
        if statuses:
            where = f"({where}) AND status IN ({', '.join('?' * len(statuses))})"
            params += tuple(statuses)
        jobs = [_job(row) for row in self.db.execute(f"{SELECT} WHERE {where} ORDER BY id",
                                                     params)]
        self._add_deps(jobs)
        return jobs

    def get(self, job_id: int) -> Job | None:
        row = self.db.execute(f"{SELECT} WHERE id = ?", (job_id,)).fetchone()
        jobs = [_job(row)] if row else []
        self._add_deps(jobs)
        return jobs[0] if jobs else None

    def _add_deps(self, jobs: list[Job]) -> None:
        """Fill in what each job depends on: one query over the IDs' span, none at all
        while no job has dependencies."""
        if not jobs or self.db.execute("SELECT 1 FROM deps LIMIT 1").fetchone() is None:
            return
        by_id = {job.id: job for job in jobs}
        for job_id, dep, ok in self.db.execute(
                "SELECT job, dep, ok FROM deps WHERE job BETWEEN ? AND ? ORDER BY job, dep",
                (min(by_id), max(by_id))):
            if job_id in by_id:
                (by_id[job_id].afterok if ok else by_id[job_id].after).append(dep)

    def get_many(self, ids: list[int]) -> dict[int, Job]:
        """The records of those of ``ids`` that exist (dependencies checked at sub)."""
        found: dict[int, Job] = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            found.update((row[0], _job(row)) for row in self.db.execute(
                f"{SELECT} WHERE id IN ({', '.join('?' * len(chunk))})", chunk))
        return found

    def delete(self, ids: list[int]) -> None:
        self.db.executemany("DELETE FROM jobs WHERE id = ?", ((i,) for i in ids))
        self.db.executemany("DELETE FROM notes WHERE job = ?", ((i,) for i in ids))
        self.db.executemany("DELETE FROM unsettled WHERE job = ?", ((i,) for i in ids))
        self.db.executemany("DELETE FROM deps WHERE job = ?", ((i,) for i in ids))

    # -- accounting ---------------------------------------------------------------------------

    def run_record(self, job: Job, **fields: object) -> dict:
        """The job's last run, for history (one that just ended, or one going on): the
        job's fields as they are now, or as ``fields`` give them; its number follows the
        job's earlier runs."""
        return {"job": job.id, "run": self.run_count(job.id) + 1,
                **{name: fields.get(name, getattr(job, name)) for name in RUN_FIELDS[2:]}}

    def add_run(self, run: dict, line: str) -> None:
        """Keep a run and its line of the history table (written once, when it ends, so
        listing 100,000 runs formats nothing)."""
        names = (*RUN_FIELDS, "line")
        self.db.execute(f"INSERT INTO runs ({', '.join(names)}) VALUES "
                        f"({', '.join('?' * len(names))})",
                        tuple(map(to_db, (*(run[n] for n in RUN_FIELDS), line))))

    def drop_lost_run(self, job_id: int) -> None:
        """Take back the job's last run if it was recorded ``lost``: its node has told
        what really became of it (``reconcile``)."""
        self.db.execute("DELETE FROM runs WHERE rowid = (SELECT MAX(rowid) FROM runs WHERE "
                        "job = ?) AND status = 'lost'", (job_id,))

    def run_count(self, job_id: int) -> int:
        return self.db.execute("SELECT COUNT(*) FROM runs WHERE job = ?",
                               (job_id,)).fetchone()[0]

    def runs(self, sel: dict, since: float | None, until: float | None,
             expr: str | None = None) -> list:
        """Runs that ended (a validated selection; ``since``/``until``: ended at or after,
        started at or before), in the order they ended: RUN_FIELDS tuples, or with
        ``expr`` (SQL over the columns: ``line``, or a JSON object) its one text per
        run (None if a run holds text that is not UTF-8: ask for tuples instead)."""
        where, params = _where(sel, "job")
        if since is not None:
            where, params = f"({where}) AND t_end >= ?", (*params, since)
        if until is not None:
            where, params = f"({where}) AND COALESCE(t_start, t_end) <= ?", (*params, until)
        query = f"FROM runs WHERE {where} ORDER BY rowid"
        if expr is not None:
            try:
                return [from_db(row[0]) for row in self.db.execute(f"SELECT {expr} {query}",
                                                               params)]
            except sqlite3.OperationalError:  # a command kept as bytes: not UTF-8
                return None
        return [tuple(map(from_db, row)) for row in self.db.execute(
            f"SELECT {', '.join(RUN_FIELDS)} {query}", params)]
