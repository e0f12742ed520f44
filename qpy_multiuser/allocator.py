"""Slot decisions: who may use how many cores, and on which node. Pure state, no I/O.

A user may always grow up to their guaranteed minimum. Above it, up to minimum + extra,
only from cores that are not the unused minimum of another user who has jobs queued: the
minimum of a user with nothing queued is lent out, and reserved again (for the next cores
that free up; nothing running is stopped) as soon as that user queues a job. Above their
share, a user may borrow idle cores, but only while no other user is waiting below their
own share. A request that does not fit is skipped, so smaller jobs behind it still run.
Memory is accounted per node.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

from qpy import attrs
from qpy_multiuser import placement, user_limits
from qpy_multiuser import rules as rules_module
from qpy_multiuser.nodes import Node

log = logging.getLogger("qpy.multiuser.allocator")


@dataclass
class User:
    name: str
    minimum: int = 0
    extra: int = 0
    used: int = 0
    queue: int = 0
    waiting: bool = False
    woken: int = -1  # the multiuser's epoch in which this user's master was last woken
    jobs: dict[int, tuple[str, int, float]] = field(default_factory=dict)
    member: bool = True  # False once removed: no share; kept only while jobs still run
    caps: user_limits.Caps = user_limits.NONE  # the admin's limits file
    mem_used: float = 0.0
    limited: str | None = None  # the limit that held the user back in the last decision
    refused: tuple | None = None  # its first job refused: (job, cores, mem, attr, whole)

    @property
    def share(self) -> int:
        return self.minimum + self.extra


class Allocator:
    """Nodes, users and allocations.

    Decisions must stay fast with 1,000 nodes and 200 users, so nothing is summed per
    decision: totals are kept up to date by every change, and up nodes are indexed by their
    number of free cores (ordinary and multicore-preferred apart), so a node is found by
    looking at the few buckets that can fit the job.
    """

    def __init__(self, nodes: dict[str, Node], rules: rules_module.Rules) -> None:
        self.rules = rules
        self.limits = user_limits.Limits()
        self.users: dict[str, User] = {}
        self.nodes: dict[str, Node] = {}
        self.set_nodes(nodes)

    # -- shares ----------------------------------------------------------------------------

    def user(self, name: str) -> User:
        """A registered user, with a share; registering one never fails: if the rules
        cannot give them a share, they get none (the admin sees the error at the next
        'distribute'). A removed user who still had jobs running is a member again."""
        user = self.users.get(name)
        if user is None or not user.member:
            if user is None:
                user = self.users[name] = User(name, caps=self.limits.of(name))
            user.member = True
            try:
                self.distribute()
            except rules_module.ShareError as exc:
                log.error("no share for %s: %s", name, exc)
        return user

    def leave(self, user: User) -> None:
        """The user was removed: no share and no queue from now on. Their running jobs
        stay counted until they end; then the user is forgotten."""
        user.member, user.queue, user.waiting = False, 0, False
        if not user.jobs:
            del self.users[user.name]
        try:
            self.distribute()
        except rules_module.ShareError as exc:
            log.error("shares unchanged after %s left: %s", user.name, exc)
            self._recount()

    def members(self) -> list[str]:
        return [name for name, user in self.users.items() if user.member]

    def distribute(self, rules: rules_module.Rules | None = None) -> None:
        """Recompute every member's share (removed users have none); raises ShareError
        and changes nothing if the rules cannot be met."""
        rules = rules or self.rules
        computed = rules_module.shares(rules, self.members(), self.total_cores)
        self.rules = rules
        for name, user in self.users.items():
            user.minimum, user.extra = computed.get(name, (0, 0))
        self._recount()

    def set_limits(self, limits: user_limits.Limits) -> None:
        """A (re)loaded limits file: every user's caps, and what is held for them."""
        self.limits = limits
        for user in self.users.values():
            user.caps = limits.of(user.name)
        self._recount()

    def set_nodes(self, nodes: dict[str, Node]) -> None:
        """Swap in a reloaded nodes file keeping every running job's accounting: a node that
        disappeared stays (draining, not given new jobs) until its jobs end."""
        self.configured = set(nodes)
        for name, old in self.nodes.items():
            if old.jobs:
                if name in nodes:
                    new = nodes[name]
                    new.used_cores, new.used_mem, new.jobs = old.used_cores, old.used_mem, old.jobs
                else:  # drains: no new jobs, still watched; "down" if it already was
                    old.up = False
                    if old.state != "down":
                        old.state, old.reason = "draining", None
                    nodes[name] = old
        self.nodes = nodes
        self._index_nodes()
        self._recount()
        if self.users:
            self.distribute()

    def update_node(self, node: Node, up: bool, cores: int, mem: float) -> None:
        """Monitoring saw a node go down or come back, or measured its size: it leaves or
        rejoins the pool, and the shares follow the new total."""
        node.up, node.cores, node.mem = up, cores, mem
        self.pool_changed(f"node {node.name} changed")

    def pool_changed(self, what: str) -> None:
        """A node left or rejoined the pool (down, up, drained, resumed) or changed size
        (``what`` says which): the indexes, totals and shares follow."""
        self._index_nodes()
        self._recount()
        if self.users:
            try:
                self.distribute()
            except rules_module.ShareError as exc:
                log.error("shares unchanged after %s: %s", what, exc)

    # -- bookkeeping -----------------------------------------------------------------------

    def _index_nodes(self) -> None:
        self.buckets: placement.Buckets = ({}, {})
        for node in self.nodes.values():
            if node.usable:
                placement.put(self.buckets, node, +1)

    def _recount(self) -> None:
        self.total_cores = sum(n.cores for n in self.nodes.values() if n.usable)
        self.used_up = sum(n.used_cores for n in self.nodes.values() if n.usable)
        self.reserved = sum(map(_reserved, self.users.values()))

    def set_queue(self, user: User, size: int) -> None:
        """The user's number of queued jobs, which decides whether their minimum is held."""
        self.reserved -= _reserved(user)
        user.queue = size
        self.reserved += _reserved(user)

    def _use(self, user: User, node: Node, cores: int, mem: float) -> None:
        """Change usage by ``cores`` (negative to free) keeping every total in step."""
        self.reserved -= _reserved(user)
        user.used += cores
        user.mem_used += mem
        self.reserved += _reserved(user)
        usable = node.usable
        if usable:
            placement.put(self.buckets, node, -1)
        node.used_cores += cores
        node.used_mem += mem
        if usable:
            placement.put(self.buckets, node, +1)
            self.used_up += cores

    # -- allocations -----------------------------------------------------------------------

    @property
    def free_cores(self) -> int:
        return self.total_cores - self.used_up

    def _free_for(self, user: User) -> int:
        """Free cores minus the unused minimums held for everyone else who waits."""
        return self.total_cores - self.used_up - (self.reserved - _reserved(user))

    def _may_grow(self, user: User, k: int) -> bool:
        if not user.member:
            return False
        if user.used + k <= user.minimum:
            return True
        if self._free_for(user) < k:
            return False
        if user.used + k <= user.share:
            return True
        return not any(u is not user and u.queue > 0 and u.used < u.share
                       and not user_limits.full(u.caps, len(u.jobs), u.used, u.mem_used)
                       for u in self.users.values())

    def _place(self, user: User, k: int, mem: float, attr: str | None,
               whole: bool) -> tuple[Node | None, int, float, str | None]:
        """Where one job of the user goes now, with the cores and memory it takes there
        (a whole node's for ``whole``), or no node and the limit that holds it back."""
        if whole:
            empty = placement.empty_node(self.buckets, k, mem, attr)
            if empty is None:
                return None, k, mem, None
            k, mem = empty.cores, empty.mem
        limited = limit_reason(user, k, mem)
        if limited is not None or not self._may_grow(user, k):
            return None, k, mem, limited
        return (empty if whole else placement.node_for(self.buckets, k, mem, attr)), k, mem, None

    def add(self, user: User, job: int, node: Node, cores: int, mem: float) -> None:
        self.reserved -= _reserved(user)  # which depends on the number of jobs
        user.jobs[job] = (node.name, cores, mem)
        self.reserved += _reserved(user)
        node.jobs.add((user.name, job))
        self._use(user, node, cores, mem)

    def remove(self, user: User, job: int) -> bool:
        """Free a job's cores and memory; False if the user had no such job."""
        if not self.unaccount(user, job):
            return False
        self.forget_if_gone(user)
        return True

    def forget_if_gone(self, user: User) -> None:
        if not user.member and not user.jobs and self.users.get(user.name) is user:
            del self.users[user.name]  # a removed user's last job ended
            self._recount()

    def unaccount(self, user: User, job: int) -> bool:
        if job not in user.jobs:
            return False
        self.reserved -= _reserved(user)  # which depends on the number of jobs
        name, cores, mem = user.jobs.pop(job)
        self.reserved += _reserved(user)
        node = self.nodes.get(name)
        if node is None:
            user.used -= cores
            user.mem_used -= mem
            self._recount()
        else:
            node.jobs.discard((user.name, job))
            self._use(user, node, -cores, -mem)
            if not node.jobs and node.drain_since is not None:
                log.info("node %s is drained: its last job ended", name)
            if not node.jobs and name not in self.configured:  # a removed node has drained
                del self.nodes[name]
                self._index_nodes()
        return True

    def node_or_kept(self, name: str) -> Node:
        """The node a granted job runs on; one that left the nodes file while the job ran
        is kept, draining, until its jobs end."""
        node = self.nodes.get(name)
        if node is None:
            node = Node(name, "", 0, 0.0, up=False, state="draining")
            self.nodes[name] = node
            self._index_nodes()
        return node

    def request(self, user: User, want: list[dict], queue_size: int) -> tuple[list[dict], bool]:
        """Grant what may run now, in the order asked; returns the grants and whether
        something was refused (the user then waits for a wake)."""
        self.set_queue(user, queue_size)
        grants: list[dict] = []
        refused = False
        user.limited = user.refused = None
        for group in want:
            k, mem, attr = group["cores"], group["mem"], group["attr"]
            whole = group.get("exclusive", False)
            for job in group["jobs"]:
                if job in user.jobs:
                    continue
                node, cores, took, limited = self._place(user, k, mem, attr, whole)
                if node is None:
                    refused = True
                    user.limited = user.limited or limited
                    user.refused = user.refused or (job, cores, took, attr, whole)
                    break
                self.add(user, job, node, cores, took)
                self.set_queue(user, user.queue - 1)
                grants.append({"job": job, "node": node.name, "address": node.address,
                               **({"cores": cores, "mem": took} if whole else {})})
        user.waiting = refused
        return grants, refused


def _reserved(user: User) -> int:
    """Cores held for ``user``: what is left of their minimum, while they have jobs
    queued. With nothing queued their minimum is lent to others, and so is what their
    limits (``user_limits``) would not let them use."""
    if user.queue <= 0:
        return 0
    caps = user.caps
    if caps.jobs is not None and len(user.jobs) >= caps.jobs:
        return 0
    held = user.minimum if caps.cores is None else min(user.minimum, caps.cores)
    return max(0, held - user.used)


def limit_reason(user: User, cores: int, mem: float) -> str | None:
    """The limit (the admin's ``limits`` file) that keeps ``user`` from starting a job of
    ``cores`` cores and ``mem`` GB now, or None: what ``qpy why`` names."""
    return user_limits.reason(user.caps, len(user.jobs), user.used, user.mem_used, cores, mem)


# -- what a master reports ---------------------------------------------------------------------


def restore(alloc: Allocator, user: User, running: list[dict]) -> None:
    """Take the user's allocations from the ledger, the multiuser's own record: a node
    removed meanwhile is kept (down) until its jobs end."""
    for item in running:
        if not math.isfinite(item["mem"]) or item["cores"] <= 0:
            continue  # written by an older version that believed any hello
        alloc.add(user, int(item["job"]), alloc.node_or_kept(item["node"]),
                  int(item["cores"]), float(item["mem"]))


def reconcile(alloc: Allocator, user: User, running: list[dict], trust_fit: bool) -> list[int]:
    """Make the user's allocations the jobs their master says are running, as far as
    they are believable, and return the jobs left out.

    A job this multiuser granted counts with the node and size it was granted. Any
    other job counts only if ``trust_fit`` (the multiuser lost its ledger and cannot
    know what it granted) and it fits on a configured node that is up, in what the
    jobs before it left free. A job reported twice counts once."""
    granted = dict(user.jobs)
    for job in list(user.jobs):
        alloc.unaccount(user, job)
    left_out: list[int] = []
    others: list[dict] = []
    for item in running:
        job = item["job"]
        entry = granted.pop(job, None)
        if entry is not None and entry[0] == item["node"]:
            alloc.add(user, job, alloc.node_or_kept(entry[0]), entry[1], entry[2])
        elif job not in user.jobs:
            others.append(item)
        else:
            left_out.append(job)
    for item in others:
        node = alloc.nodes.get(item["node"])
        fits = (trust_fit and node is not None and node.up
                and node.name in alloc.configured and item["job"] not in user.jobs
                and item["cores"] <= node.free_cores and item["mem"] <= node.free_mem)
        if fits:
            alloc.add(user, item["job"], node, item["cores"], float(item["mem"]))
        else:
            left_out.append(item["job"])
    alloc.forget_if_gone(user)
    return left_out


def explain(alloc: Allocator, user: User, k: int, mem: float, attr: str | None) -> dict:
    """What keeps a job of ``user`` asking for ``k`` cores, ``mem`` GB and ``attr`` from
    starting now, decided as ``request`` would (``qpy why``): the user limit that holds
    it (``limit``), may the user grow by ``k``
    (or are they at their share while others wait below theirs, or are the free cores kept
    for others' minimums), and which node would take it, or which comes closest."""
    waiting = [u for u in alloc.users.values()
               if u is not user and u.queue > 0 and u.used < u.share]
    expr = attrs.compile_expr(attr) if attr else None
    matching = [n for n in alloc.nodes.values() if n.name in alloc.configured
                and (expr is None or expr.matches(n.attrs, n.name))]
    up = [n for n in matching if n.up]
    node = placement.node_for(alloc.buckets, k, mem, attr)
    closest = None
    if node is None and up:
        best = max(up, key=lambda n: (min(n.free_cores, k) / k + min(max(n.free_mem, 0.0),
                                                                     mem) / mem,
                                      n.free_cores, n.free_mem))
        closest = {"name": best.name, "free_cores": best.free_cores,
                   "free_mem": best.free_mem}
    return {"used": user.used, "minimum": user.minimum, "extra": user.extra,
            "limit": limit_reason(user, k, mem), "grow": alloc._may_grow(user, k),
            "above_share": user.used + k > max(user.share, user.minimum) and bool(waiting),
            "waiting": [{"user": u.name, "used": u.used, "share": u.share} for u in waiting],
            "free": alloc.free_cores, "free_for": alloc._free_for(user),
            "node": node.name if node else None, "closest": closest, "matching": len(up),
            "down": sorted(n.name for n in matching if not n.up)}
