"""The store's smaller tables beside the jobs: notes, settings, and the runs given up on
while their node was out of reach; and how a value is kept in SQLite.

A part of ``Store`` (its base class), apart so that the jobs' own table and its
transactions read as one piece.
"""

from __future__ import annotations

import sqlite3


def to_db(value: object) -> object:
    """A value as SQLite can keep it. Text that is not valid UTF-8 (a directory or command
    named in another encoding arrives with surrogates, as Python decodes file names) is
    kept as its bytes, so the job still runs in exactly that directory."""
    if isinstance(value, str):
        try:
            value.encode()
        except UnicodeEncodeError:
            return value.encode("utf-8", "surrogatepass")
    return value


def from_db(value: object) -> object:
    """The inverse of ``to_db``."""
    return value.decode("utf-8", "surrogatepass") if isinstance(value, bytes) else value


class SideTables:
    """Notes, settings and unsettled runs, on the store's connection."""

    db: sqlite3.Connection

    def add_note(self, job_id: int, t: float, text: str) -> None:
        self.db.execute("INSERT INTO notes (job, t, text) VALUES (?, ?, ?)",
                        (job_id, t, to_db(text)))

    def notes(self, job_id: int) -> list[tuple[float, str]]:
        return [(t, from_db(text)) for t, text in self.db.execute(
            "SELECT t, text FROM notes WHERE job = ? ORDER BY rowid", (job_id,))]

    def jobs_with_notes(self) -> list[int]:
        return [r[0] for r in self.db.execute("SELECT DISTINCT job FROM notes ORDER BY job")]

    # -- runs given up on while their node was out of reach ----------------------------------

    def unsettle(self, job_id: int, node: str, address: str | None) -> None:
        """Remember that the job's run on ``node`` has an unknown fate: asked about when a
        launcher reaches the node again."""
        self.db.execute("INSERT OR REPLACE INTO unsettled (job, node, address) VALUES (?, ?, ?)",
                        (job_id, to_db(node), to_db(address)))

    def settle(self, job_id: int, node: str) -> bool:
        """The node told what became of the run; False if it was not waited for."""
        return self.db.execute("DELETE FROM unsettled WHERE job = ? AND node = ?",
                               (job_id, to_db(node))).rowcount > 0

    def unsettled_node(self, job_id: int) -> str | None:
        """The node a run of ``job_id`` was given up on, if any (by its key: ``qpy kill``
        asks this of every queued job it removes)."""
        row = self.db.execute("SELECT node FROM unsettled WHERE job = ?", (job_id,)).fetchone()
        return from_db(row[0]) if row else None

    def unsettled(self) -> list[tuple[int, str, str | None]]:
        """(job, node, address) of every run whose fate is not known yet."""
        return [(job, from_db(node), from_db(address)) for job, node, address in self.db.execute(
            "SELECT job, node, address FROM unsettled ORDER BY job")]

    def setting(self, key: str, default: str | None = None) -> str | None:
        row = self.db.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return from_db(row[0]) if row else default

    def settings(self) -> dict[str, str]:
        return {key: from_db(value) for key, value in self.db.execute(
            "SELECT key, value FROM settings")}

    def put_setting(self, key: str, value: str | None) -> None:
        if value is None:
            self.db.execute("DELETE FROM settings WHERE key = ?", (key,))
        else:
            self.db.execute("INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)",
                            (to_db(key), to_db(value)))
