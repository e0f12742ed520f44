"""The multiuser's state: allowed users, nodes and shares (the allocator), the ledger, the
connected masters, and the wakes and node lists waiting to be sent to them.

Everything here is behind one lock. The request handlers (``handlers.py``) and the admin
commands (``admin_ops.py``) change it; node monitoring reports into it. Events for the
masters are queued under the lock and sent by ``flush_wakes`` outside it, so a slow master
delays nobody's decision.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from qpy import cgroups, enrolment, names, paths
from qpy.peers import Peer
from qpy.server import Session
from qpy_multiuser import drain, interactive, monitor, probe, reported, user_limits
from qpy_multiuser import nodes as nodes_module
from qpy_multiuser import rules as rules_module
from qpy_multiuser.allocator import Allocator
from qpy_multiuser.chaining import Chains
from qpy_multiuser.enrol import Enrolments
from qpy_multiuser.ledger import Ledger
from qpy_multiuser.messages import MessageLog

log = logging.getLogger("qpy.multiuser")
ADMIN = "@admin"
WAKE_BATCH = 8


class Multiuser:
    """Shared state behind one lock, and the sessions of the connected masters."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.lock = threading.RLock()
        self.allowed = nodes_module.load_users(home / "allowed_users")
        self.interval = monitor.interval_setting(home)
        self.alloc = Allocator(self.monitored(nodes_module.load(home / "nodes"), {}),
                               rules_module.load(home / "distribution_rules"))
        self.alloc.set_limits(user_limits.load(home / "limits"))
        self.alloc.distribute()
        # Without its ledger, the multiuser cannot know what it granted before: each
        # user's first hello may then report running jobs that fit (see Allocator.reconcile)
        self.lost_ledger = not (home / "ledger.db").exists()
        self.registered: set[str] = set()  # users whose master said hello since start
        self.ledger = Ledger(home / "ledger.db")
        for name, running in self.ledger.load().items():  # jobs that run on, unreported yet
            user = self.alloc.user(name)
            reported.restore(self.alloc, user, running)
            if name not in self.allowed:  # removed while their jobs ran: no share
                self.alloc.leave(user)
        drain.apply(self)
        self.masters: dict[str, Session] = {}
        self.epoch = 0
        self.chains = Chains(self.post_to)  # who may chain a freed slot to their next job
        self.wakes: list[Session] = []
        self.outbox: list[tuple[Session, dict]] = []
        self.drops: list[Session] = []  # sessions to end once the outbox is sent
        self.sessions_of: Callable[[str], list[Session]] = lambda user: []  # the server's
        self.messages = MessageLog()  # kept requests, while saveMessages is on
        self.admin_key = paths.load_or_create_key(home / "admin.key")
        self.enrolments = Enrolments(home)
        self.address = "127.0.0.1"
        self.stop = lambda: None
        self.monitor = monitor.Monitor(home, self.interval, self.node_report,
                                       self.node_failed) if self.interval else None
        self.policy = interactive.load(home)  # interactive sessions: limits, idle policy
        self.idle = interactive.IdlePolicy(self.lock, lambda: self.policy, self.other_waits,
                                           self.post_to, self.flush_wakes)

    def shutdown(self) -> None:
        """After the server stopped: end node monitoring (running jobs go on)."""
        if self.monitor is not None:
            self.monitor.stop()
        self.idle.stop()

    # -- nodes -----------------------------------------------------------------------------

    def monitored(self, nodes: dict[str, nodes_module.Node],
                  current: dict[str, nodes_module.Node]) -> dict[str, nodes_module.Node]:
        """Freshly loaded nodes, with what monitoring knows of the ``current`` ones: a
        remote node never seen is unknown, and out of the pool, until its first sample."""
        if self.interval is None:
            return nodes
        for node in nodes.values():
            old = current.get(node.name)
            if old is not None and old.address == node.address:
                node.up, node.state, node.reason = old.up, old.state, old.reason
                node.measured = old.measured
                node.cores = old.cores if "cores" in node.detect else node.cores
                node.mem = old.mem if "mem" in node.detect else node.mem
            elif not node.local:
                node.up, node.state, node.reason = False, "unknown", "not checked yet"
        return nodes

    def watch_nodes(self) -> None:
        """Watch the nodes of the file, and the removed ones while their jobs drain: if
        such a node fails, its jobs must end (lost) instead of holding cores for ever."""
        if self.monitor is not None:
            self.monitor.watch({name: node for name, node in self.alloc.nodes.items()
                                if node.address})

    def _unwatched(self, name: str) -> bool:
        """A report about a node that is gone (a removed node that drained): stop its
        watcher; True if so."""
        if name in self.alloc.nodes:
            return False
        self.watch_nodes()
        return True

    def node_report(self, name: str, address: str, sample: dict) -> None:
        """A sample from monitoring: the node is up, with its measured size if detected.
        A removed node that drains stays out of the pool. The masters hear of it when that
        changes, or the tools interactive sessions need."""
        with self.lock:
            node = self.alloc.nodes.get(name)
            if self._unwatched(name) or node.address != address:
                return
            tools, node.measured = node.measured.get("tools"), sample
            if name not in self.alloc.configured:
                if node.state == "down":
                    node.state, node.reason = "draining", None
                    self.announce_nodes()
                return
            cores = _positive(sample.get("cores"), int) if "cores" in node.detect else None
            mem = _positive(sample.get("mem_total"), float) if "mem" in node.detect else None
            size = (cores or node.cores, mem or node.mem)
            if node.up and size == (node.cores, node.mem):
                if tools != sample.get("tools"):
                    self.announce_nodes()
            elif size[0] and size[1]:  # else nothing to run jobs with yet
                log.info("node %s is up (%d cores, %g GB)", name, *size)
                node.state, node.reason = "up", None
                self.alloc.update_node(node, True, *size)
                self.announce_nodes()
                self.changed()
        self.flush_wakes()

    def node_failed(self, name: str, address: str, reason: str) -> None:
        """Monitoring cannot reach a node: it gets no jobs, and the masters mark the jobs
        that ran there."""
        with self.lock:
            node = self.alloc.nodes.get(name)
            if self._unwatched(name) or node.address != address:
                return
            if node.state == "down":
                node.reason = reason  # still down, maybe for a new reason
                return
            log.warning("node %s is down: %s", name, reason)
            node.state, node.reason = "down", reason
            self.alloc.update_node(node, False, node.cores, node.mem)
            self.announce_nodes()
        self.flush_wakes()

    def announce_nodes(self) -> None:
        """Queue the node list for every master; sent by ``flush_wakes``, outside the lock.
        A node that changed may no longer take a chained job."""
        self.chains.take_back()
        event = {"type": "nodes", "nodes": [n.public() for n in self.alloc.nodes.values()]}
        self.outbox += [(session, event) for session in self.masters.values()]

    # -- identity --------------------------------------------------------------------------

    def key_for(self, user: str, peer: Peer) -> bytes | None:
        """The key a connecting user must prove; None for anyone without one. A user the
        admin removed keeps their key on file: they can still prove who they are, so
        they can be told that they are not allowed (``not_allowed``), and nothing else.
        ``@join:USER`` proves an enrolment code instead (``qpy_multiuser.enrol``)."""
        if user == ADMIN:
            return self.admin_key
        joiner = enrolment.joining(user)
        if joiner is not None:
            return self.enrolments.key(joiner, peer) if names.is_user_name(joiner) else None
        if not names.is_user_name(user):
            return None
        try:
            return paths.read_key(self.home / "keys" / user)
        except (OSError, ValueError):
            return None

    def port(self) -> str:
        """The port this multiuser listens on, as users' bundles carry it."""
        return (self.home / "multiuser_connection_port").read_text().strip()

    def not_allowed(self, user: str) -> str | None:
        """Why ``user`` may not use the cluster, or None if they may."""
        if user == ADMIN or user in self.allowed:
            return None
        return (f"{user} is not allowed on this cluster: the qpy admin removed them "
                "from allowed_users")

    def revoke(self, user: str) -> None:
        """``user`` was taken out of ``allowed``: their share goes to the others at once
        (their running jobs stay counted until their master reports them ended), and
        every session of theirs ends; their master is told why first."""
        member = self.alloc.users.get(user)
        if member is not None:
            self.alloc.leave(member)
        self.registered.discard(user)
        master = self.masters.pop(user, None)
        if master is not None:
            self.outbox.append((master, {"type": "bye", "reason": self.not_allowed(user)}))
        self.drops += self.sessions_of(user)
        log.warning("%s removed: their sessions end and their share is freed", user)
        self.changed()

    # -- masters and wakes -----------------------------------------------------------------

    def changed(self, skip: str | None = None) -> None:
        """Cores changed hands: a new epoch, in which each waiting master may be woken once.
        Without ``skip`` (a master came or went, the admin or monitoring changed the pool
        or the rules) no master may chain until it asks again."""
        self.epoch += 1
        if skip is None:
            self.chains.take_back()
        self.wake(skip)

    def wake(self, skip: str | None = None) -> None:
        """Queue wakes for a few waiting masters, the users furthest below their share
        first; the rest follow if those cannot use the free cores (no thundering herd)."""
        waiting = [u for u in self.alloc.users.values() if u.waiting and u.woken < self.epoch
                   and u.name != skip and u.name in self.masters]
        waiting.sort(key=lambda u: (u.used - u.share, u.name))
        for user in waiting[:WAKE_BATCH]:
            user.waiting, user.woken = False, self.epoch
            self.wakes.append(self.masters[user.name])

    def flush_wakes(self) -> None:
        """Send the queued node lists and wakes, outside the lock: a slow master delays
        nobody's decision."""
        with self.lock:
            outbox, self.outbox = self.outbox, []
            wakes, self.wakes = self.wakes, []
            drops, self.drops = self.drops, []
        for session, event in outbox:
            session.post(event)
        for session in wakes:
            session.post({"type": "wake"})
        for session in drops:
            session.drop()

    def post_to(self, user: str, event: dict) -> None:
        """Queue an event for a user's master, if connected (sent by ``flush_wakes``)."""
        session = self.masters.get(user)
        if session is not None:
            self.outbox.append((session, event))

    def other_waits(self, user: str) -> bool:
        """Whether another user has jobs waiting for cores (idle_action preempt)."""
        return any(u.name != user and u.queue > 0 for u in self.alloc.users.values())

    def closed(self, session: Session) -> None:
        """A master went away: its jobs keep running, so its allocations stay until its
        next hello reports what is still running. Its queue cannot start meanwhile, so it
        no longer keeps others from borrowing."""
        with self.lock:
            if self.masters.get(session.user) is session:
                del self.masters[session.user]
                user = self.alloc.users.get(session.user)
                if user is not None:
                    user.waiting = False
                    if user.queue:
                        self.alloc.set_queue(user, 0)
                        self.changed()
        self.flush_wakes()

    # -- what users and the admin see ------------------------------------------------------

    def snapshot(self) -> dict:
        """Users and nodes as ``qpy status`` and ``qpy-admin status`` show them."""
        with self.lock:
            users = [{"user": u.name, "used": u.used, "minimum": u.minimum, "extra": u.extra,
                      "queue": u.queue, "connected": u.name in self.masters}
                     for u in self.alloc.users.values()]
            nodes = [{**n.public(), "used_cores": n.used_cores, "used_mem": n.used_mem,
                      **_measured(n)} for n in self.alloc.nodes.values()]
            sessions = self.idle.public(time.time())
        return {"users": users, "nodes": nodes, "sessions": sessions}



def _measured(node: nodes_module.Node) -> dict:
    """What monitoring last measured (a local node without monitoring is measured now)."""
    sample = node.measured
    if not sample and node.local:
        return {"load": round(os.getloadavg()[0], 2), "mem_in_use": probe.memory()[1],
                "outsiders": None, "disk": None,
                "memory_limit": cgroups.node_memory_mode(node.cgroup)}
    return {"load": sample.get("load"), "mem_in_use": sample.get("mem_used"),
            "outsiders": sample.get("outsiders"), "disk": sample.get("disk"),
            "memory_limit": sample.get("memory_limit")}


def _positive(value: object, kind: type) -> int | float | None:
    """A measured size, if it is a usable one."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return kind(value)
    return None
