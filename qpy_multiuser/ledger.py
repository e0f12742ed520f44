"""The multiuser's persisted allocations, so a restarted multiuser never overcommits.

Between a multiuser restart and the moment every master has registered again, the cores
of jobs that are still running must not be handed out twice. The ledger (SQLite, WAL, in
the admin home) holds every allocation; it is loaded at start and then corrected by each
master's ``hello``, which reports what really runs.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

INSERT = "INSERT OR REPLACE INTO allocations (user, job, node, cores, mem, more) " \
    "VALUES (?, ?, ?, ?, ?, ?)"


def _more(span: tuple | None) -> str | None:
    """A multi-node job's other nodes as the ledger keeps them (JSON), or None."""
    return json.dumps([list(part) for part in span]) if span else None


class Ledger:
    """Allocations by (user, job); callers hold the multiuser's lock."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS allocations (user TEXT NOT NULL, "
                        "job INTEGER NOT NULL, node TEXT NOT NULL, cores INTEGER NOT NULL, "
                        "mem REAL NOT NULL, PRIMARY KEY (user, job))")
        # a multi-node job's other nodes, [[node, cores, mem], ...] (a later column)
        if "more" not in {row[1] for row in self.db.execute("PRAGMA table_info(allocations)")}:
            self.db.execute("ALTER TABLE allocations ADD COLUMN more TEXT")
        # nodes the admin drained (qpy-admin drain), kept across restarts
        self.db.execute("CREATE TABLE IF NOT EXISTS drains (node TEXT PRIMARY KEY, "
                        "since REAL NOT NULL, reason TEXT)")

    def load(self) -> dict[str, list[dict]]:
        """Every user's allocations as the ``running`` lists a hello would carry."""
        found: dict[str, list[dict]] = {}
        for user, job, node, cores, mem, more in self.db.execute(
                "SELECT user, job, node, cores, mem, more FROM allocations ORDER BY user, job"):
            found.setdefault(user, []).append(
                {"job": job, "node": node, "cores": cores, "mem": mem,
                 **({"more": json.loads(more)} if more else {})})
        return found

    def record(self, user: str, released: list[int], granted: list[tuple]) -> None:
        """One request's changes in one transaction: (job, node, cores, mem, other nodes)
        granted."""
        if not released and not granted:
            return
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany("DELETE FROM allocations WHERE user = ? AND job = ?",
                                ((user, job) for job in released))
            self.db.executemany(INSERT, ((user, job, node, cores, mem, _more(span))
                                         for job, node, cores, mem, span in granted))

    def replace(self, user: str, jobs: dict[int, tuple[str, int, float]],
                spans: dict[int, tuple] | None = None) -> None:
        """A user's allocations are now exactly ``jobs`` (and the other nodes of their
        multi-node jobs, ``spans``), after a hello or a repair."""
        spans = spans or {}
        with self.db:
            self.db.execute("BEGIN")
            self.db.execute("DELETE FROM allocations WHERE user = ?", (user,))
            self.db.executemany(INSERT, ((user, job, *entry, _more(spans.get(job)))
                                         for job, entry in jobs.items()))

    def drains(self) -> dict[str, tuple[float, str | None]]:
        """Drained nodes: name -> (since, reason)."""
        return {node: (since, reason) for node, since, reason in self.db.execute(
            "SELECT node, since, reason FROM drains")}

    def set_drain(self, node: str, since: float | None, reason: str | None = None) -> None:
        """Record ``node`` as drained since ``since``; None: resumed."""
        if since is None:
            self.db.execute("DELETE FROM drains WHERE node = ?", (node,))
        else:
            self.db.execute("INSERT OR REPLACE INTO drains VALUES (?, ?, ?)",
                            (node, since, reason))
