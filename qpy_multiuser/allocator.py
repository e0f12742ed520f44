"""Slot decisions: who may use how many cores, and on which node. Pure state, no I/O.

A user may always grow up to their guaranteed minimum. Above it, up to minimum + extra,
only from cores nobody else is guaranteed. Above their share, a user may borrow idle cores,
but only while no other user is waiting below their own share. A request that does not fit
is skipped, so smaller jobs behind it still run. Memory is accounted per node.
"""

from __future__ import annotations

import logging
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
        """A registered user; registering one never fails: if the rules cannot give them a
        share, they get none (the admin sees the error at the next 'distribute')."""
        if name not in self.users:
            self.users[name] = User(name)
            try:
                self.distribute()
            except rules_module.ShareError as exc:
                log.error("no share for %s: %s", name, exc)
        return self.users[name]

    def distribute(self, rules: rules_module.Rules | None = None) -> None:
        """Recompute every registered user's share; raises ShareError and changes nothing
        if the rules cannot be met."""
        rules = rules or self.rules
        computed = rules_module.shares(rules, list(self.users), self.total_cores)
        self.rules = rules
        for name, (minimum, extra) in computed.items():
            self.users[name].minimum, self.users[name].extra = minimum, extra
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
        self.unused_min = sum(max(0, u.minimum - u.used) for u in self.users.values())

    def _use(self, user: User, node: Node, cores: int, mem: float) -> None:
        """Change usage by ``cores`` (negative to free) keeping every total in step."""
        self.unused_min -= max(0, user.minimum - user.used)
        user.used += cores
        self.unused_min += max(0, user.minimum - user.used)
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
        """Free cores minus the unused guaranteed minimums of everyone else."""
        reserved = self.unused_min - max(0, user.minimum - user.used)
        return self.total_cores - self.used_up - reserved

    def _may_grow(self, user: User, k: int) -> bool:
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
        entry = user.jobs.pop(job, None)
        if entry is None:
            return False
        name, cores, mem = entry
        node = self.nodes.get(name)
        if node is None:
            user.used -= cores
            self._recount()
            return True
        node.jobs.discard((user.name, job))
        self._use(user, node, -cores, -mem)
        if not node.jobs and name not in self.configured:  # a removed node has drained
            del self.nodes[name]
            self._index_nodes()
        return True

    def reconcile(self, user: User, running: list[dict]) -> None:
        """Make the user's allocations exactly the jobs their master says are running."""
        for job in list(user.jobs):
            self.remove(user, job)
        for item in running:
            node = self.nodes.get(str(item.get("node")))
            if node is None:  # a node removed while the master was away: keep accounting
                node = Node(str(item.get("node")), "", 0, 0.0, up=False)
                self.nodes[node.name] = node
                self._index_nodes()
            self.add(user, int(item["job"]), node, int(item["cores"]), float(item["mem"]))

    def request(self, user: User, want: list[dict], queue_size: int) -> tuple[list[dict], bool]:
        """Grant what may run now, in the order asked; returns the grants and whether
        something was refused (the user then waits for a wake)."""
        user.queue = queue_size
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
                user.queue -= 1
                grants.append({"job": job, "node": node.name, "address": node.address})
        user.waiting = refused
        return grants, refused


def explain(alloc: Allocator, user: User, k: int, mem: float, attr: str | None) -> dict:
    """What keeps a job of ``user`` asking for ``k`` cores, ``mem`` GB and ``attr`` from
    starting now, decided as ``request`` would (``qpy why``): may the user grow by ``k``
    (or are they at their share while others wait below theirs, or are the free cores kept
    for others' minimums), and which node would take it, or which comes closest."""
    waiting = [u for u in alloc.users.values()
               if u is not user and u.queue > 0 and u.used < u.share]
    expr = attrs.compile_expr(attr) if attr else None
    matching = [n for n in alloc.nodes.values() if n.name in alloc.configured
                and (expr is None or expr.matches(n.attrs, n.name))]
    up = [n for n in matching if n.up]
    node = alloc._node_for(k, mem, attr)
    closest = None
    if node is None and up:
        best = max(up, key=lambda n: (min(n.free_cores, k) / k + min(max(n.free_mem, 0.0),
                                                                     mem) / mem,
                                      n.free_cores, n.free_mem))
        closest = {"name": best.name, "free_cores": best.free_cores,
                   "free_mem": best.free_mem}
    return {"used": user.used, "minimum": user.minimum, "extra": user.extra,
            "grow": alloc._may_grow(user, k),
            "above_share": user.used + k > max(user.share, user.minimum) and bool(waiting),
            "waiting": [{"user": u.name, "used": u.used, "share": u.share} for u in waiting],
            "free": alloc.free_cores, "free_for": alloc._free_for(user),
            "node": node.name if node else None, "closest": closest, "matching": len(up),
            "down": sorted(n.name for n in matching if not n.up)}
