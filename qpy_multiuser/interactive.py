"""Interactive sessions (``qpy connect``) in the multiuser: the admin's ``interactive`` file,
the idle times the masters report, and what the idle policy does about them.

The file (in the admin home; without it there are no limits and no idle policy)::

    max_sessions 3          # queued and running sessions per user
    max_cores 4             # cores of one session
    max_mem 16              # GB of one session
    idle_warn 2-00:00:00    # the owner is told (durations: [D-]HH:MM:SS, or 90s 30m 12h 2d,
                            # as qpy.timetext.parse_limit reads them in its CLOCK style)
    idle_limit 3-00:00:00   # the session ends, its cores go back to the pool
    idle_action end         # or preempt: end it only while another user waits for cores

The limits go to every master (``hello``, and a ``limits`` event after ``distribute``),
which refuses a session beyond them with the reason. Masters report their sessions' idle
times whenever they change (``idle_report``); a thread here sleeps until the next moment
the policy must act (no polling) and then tells the owner's master (``idle_action``):
``warn`` once the session passes idle_warn, ``end`` once it passes idle_limit. Each is sent
once per idle spell; activity starts a new one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from qpy import timetext
from qpy_multiuser.nodes import FileError, lines_of

FILE = "interactive"


@dataclass
class Policy:
    max_sessions: int | None = None
    max_cores: int | None = None
    max_mem: float | None = None
    idle_warn: float | None = None
    idle_limit: float | None = None
    idle_action: str = "end"

    def public(self) -> dict:
        """What the masters are told (``hello`` and ``limits``)."""
        return {"max_sessions": self.max_sessions, "max_cores": self.max_cores,
                "max_mem": self.max_mem, "idle_warn": self.idle_warn,
                "idle_limit": self.idle_limit, "idle_action": self.idle_action}


def duration(text: str, where: str) -> float | None:
    """Seconds of an idle time (None: off), in the clock style of the one parser."""
    try:
        seconds = timetext.parse_limit(text, where, timetext.CLOCK)
    except timetext.TimeError as exc:
        raise FileError(str(exc)) from None
    return None if seconds is None else float(seconds)


def _number(text: str, where: str, kind: type, low: float) -> float:
    try:
        value = kind(text)
    except ValueError:
        raise FileError(f"{where}: expected a number, not {text!r}") from None
    if not value >= low or value == float("inf"):
        raise FileError(f"{where}: must be at least {low:g}, not {text!r}")
    return value


def parse(text: str, path: str = FILE) -> Policy:
    """The file's settings; FileError ``file:line: reason`` for anything malformed."""
    policy, seen = Policy(), set()
    for where, line in lines_of(text, path):
        words = line.split()
        if len(words) != 2:
            raise FileError(f"{where}: expected 'KEY VALUE', got {line!r}")
        key, value = words
        if key in seen:
            raise FileError(f"{where}: {key} is set twice")
        seen.add(key)
        if key == "max_sessions":
            policy.max_sessions = int(_number(value, where, int, 0))
        elif key == "max_cores":
            policy.max_cores = int(_number(value, where, int, 1))
        elif key == "max_mem":
            policy.max_mem = _number(value, where, float, 1e-9)
        elif key in ("idle_warn", "idle_limit"):
            setattr(policy, key, duration(value, where))
        elif key == "idle_action":
            if value not in ("end", "preempt"):
                raise FileError(f"{where}: idle_action must be end or preempt, not {value!r}")
            policy.idle_action = value
        else:
            raise FileError(f"{where}: unknown setting {key!r} (max_sessions, max_cores, "
                            "max_mem, idle_warn, idle_limit, idle_action)")
    return policy


def load(home: Path) -> Policy:
    path = home / FILE
    if not path.exists():
        return Policy()
    try:
        return parse(path.read_text(), str(path))
    except OSError as exc:
        raise FileError(f"{path}: cannot read: {exc.strerror}") from None


@dataclass
class Entry:
    """One running session as its master reported it."""

    node: str
    since: float | None  # idle since (this host's clock); None: not ready yet
    attached: int | None
    sent: set = field(default_factory=set)  # actions sent in this idle spell


class IdlePolicy:
    """The reported sessions and the thread that acts on them; shares the multiuser's lock
    (``lock``) so its decisions see the allocator as the handlers leave it."""

    def __init__(self, lock: threading.RLock, policy: Callable[[], Policy],
                 waiting: Callable[[str], bool], post: Callable[[str, dict], None],
                 flush: Callable[[], None]) -> None:
        self.cond = threading.Condition(lock)
        self.policy, self.waiting, self.post, self.flush = policy, waiting, post, flush
        self.sessions: dict[str, dict[int, Entry]] = {}
        self.stopped = self.dirty = False
        threading.Thread(target=self._run, name="idle-policy", daemon=True).start()

    def report(self, user: str, items: list[dict], now: float) -> None:
        """A master's running sessions now (under the lock)."""
        old = self.sessions.get(user, {})
        new = {}
        for item in items:
            idle = item.get("idle")
            since = None if idle is None else now - float(idle)
            entry = old.get(item["job"]) or Entry(item["node"], since, item.get("attached"))
            if since is None or entry.since is None or since > entry.since + 0.5:
                entry.sent = set()  # activity: a new idle spell
            entry.node, entry.since, entry.attached = item["node"], since, item.get("attached")
            new[item["job"]] = entry
        self.sessions[user] = new
        self.poke()

    def forget(self, user: str, jobs: list[int]) -> None:
        for job in jobs:
            self.sessions.get(user, {}).pop(job, None)

    def poke(self) -> None:
        """Something changed (a report, a user waiting): decide again (under the lock).
        With no session tracked there is nothing to decide, and a user waiting is
        common (each slots request of a long queue): no thread is woken for it."""
        if not any(self.sessions.values()):
            return
        self.dirty = True
        self.cond.notify_all()

    def stop(self) -> None:
        with self.cond:
            self.stopped = True
            self.cond.notify_all()

    def public(self, now: float) -> list[dict]:
        return [{"user": user, "job": job, "node": e.node, "attached": e.attached,
                 "idle": None if e.since is None else round(max(0.0, now - e.since), 1)}
                for user, jobs in sorted(self.sessions.items())
                for job, e in sorted(jobs.items())]

    def _run(self) -> None:
        """Decide, send outside the lock (a slow master delays nobody), sleep until the
        next deadline or the next change."""
        while True:
            with self.cond:
                if self.stopped:
                    return
                self.dirty = False
                wait = self.decide(time.time())
            self.flush()
            with self.cond:
                if not self.dirty and not self.stopped:
                    self.cond.wait(wait)

    def decide(self, now: float) -> float | None:
        """Send what is due; the seconds until the next thing will be (None: nothing)."""
        policy = self.policy()
        soonest = None
        for user, jobs in self.sessions.items():
            for job, entry in jobs.items():
                if entry.since is None:
                    continue
                idle = now - entry.since
                for action, after in (("warn", policy.idle_warn), ("end", policy.idle_limit)):
                    if after is None or action in entry.sent:
                        continue
                    if idle < after:
                        soonest = min(soonest or after - idle, after - idle)
                    elif action == "warn" or policy.idle_action == "end" or \
                            self.waiting(user):
                        entry.sent.add(action)
                        self.post(user, {"type": "idle_action", "job": job, "action": action,
                                         "idle": round(idle, 1)})
        return None if soonest is None else max(soonest, 0.01)
