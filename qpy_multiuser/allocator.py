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
                user = self.users[name] = User(name)
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

    def set_nodes(self, nodes: dict[str, Node]) -> None:
        """Swap in a reloaded nodes file keeping every running job's accounting: a node that
        disappeared stays (marked down) until its jobs end."""
        self.configured = set(nodes)
        for name, old in self.nodes.items():
            if old.jobs:
                if name in nodes:
                    new = nodes[name]
                    new.used_cores, new.used_mem, new.jobs = old.used_cores, old.used_mem, old.jobs
                else:
                    old.up = False
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
        self._index_nodes()
        self._recount()
        if self.users:
            try:
                self.distribute()
            except rules_module.ShareError as exc:
                log.error("shares unchanged after node %s changed: %s", node.name, exc)

    # -- bookkeeping -----------------------------------------------------------------------

    def _index_nodes(self) -> None:
        self.buckets: tuple[dict[int, dict[str, Node]], dict[int, dict[str, Node]]] = ({}, {})
        for node in self.nodes.values():
            if node.up:
                self._bucket(node, +1)

    def _bucket(self, node: Node, sign: int) -> None:
        """Put ``node`` into (+1) or take it out of (-1) the bucket of its free cores."""
        index = self.buckets[node.pref_multicore]
        if sign > 0:
            index.setdefault(node.free_cores, {})[node.name] = node
        else:
            same = index[node.free_cores]
            del same[node.name]
            if not same:
                del index[node.free_cores]

    def _recount(self) -> None:
        self.total_cores = sum(n.cores for n in self.nodes.values() if n.up)
        self.used_up = sum(n.used_cores for n in self.nodes.values() if n.up)
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
        self.reserved += _reserved(user)
        if node.up:
            self._bucket(node, -1)
        node.used_cores += cores
        node.used_mem += mem
        if node.up:
            self._bucket(node, +1)
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
                       for u in self.users.values())

    def _node_for(self, k: int, mem: float, attr: str | None) -> Node | None:
        """Single-core jobs go to the emptiest ordinary node and use multicore-preferred
        nodes only when nothing else fits; multicore jobs take the tightest fit,
        multicore-preferred nodes first."""
        expr = attrs.compile_expr(attr) if attr else None
        passes = ((False, True), (True, True)) if k == 1 else ((True, False), (False, False))
        for pref, emptiest in passes:
            index = self.buckets[pref]
            for free in sorted((f for f in index if f >= k), reverse=emptiest):
                for node in index[free].values():
                    if node.free_mem >= mem and (expr is None or expr.matches(node.attrs,
                                                                              node.name)):
                        return node
        return None

    def add(self, user: User, job: int, node: Node, cores: int, mem: float) -> None:
        user.jobs[job] = (node.name, cores, mem)
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
        entry = user.jobs.pop(job, None)
        if entry is None:
            return False
        name, cores, mem = entry
        node = self.nodes.get(name)
        if node is None:
            user.used -= cores
            self._recount()
        else:
            node.jobs.discard((user.name, job))
            self._use(user, node, -cores, -mem)
            if not node.jobs and name not in self.configured:  # a removed node has drained
                del self.nodes[name]
                self._index_nodes()
        return True

    def node_or_kept(self, name: str) -> Node:
        """The node a granted job runs on; one that left the nodes file while the job ran
        is kept, down, until its jobs end."""
        node = self.nodes.get(name)
        if node is None:
            node = Node(name, "", 0, 0.0, up=False)
            self.nodes[name] = node
            self._index_nodes()
        return node

    def request(self, user: User, want: list[dict], queue_size: int) -> tuple[list[dict], bool]:
        """Grant what may run now, in the order asked; returns the grants and whether
        something was refused (the user then waits for a wake)."""
        self.set_queue(user, queue_size)
        grants: list[dict] = []
        refused = False
        for group in want:
            k, mem, attr = group["cores"], group["mem"], group["attr"]
            for job in group["jobs"]:
                if job in user.jobs:
                    continue
                node = self._node_for(k, mem, attr) if self._may_grow(user, k) else None
                if node is None:
                    refused = True
                    break
                self.add(user, job, node, k, mem)
                self.set_queue(user, user.queue - 1)
                grants.append({"job": job, "node": node.name, "address": node.address})
        user.waiting = refused
        return grants, refused


def _reserved(user: User) -> int:
    """Cores held for ``user``: what is left of their minimum, while they have jobs
    queued. With nothing queued their minimum is lent to others."""
    return max(0, user.minimum - user.used) if user.queue > 0 else 0


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
