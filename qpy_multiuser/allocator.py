"""Slot decisions: who may use how many cores, and on which node. Pure state, no I/O.

A user may always grow up to their guaranteed minimum. Above it, up to minimum + extra,
only from cores that are not the unused minimum of another user who has jobs queued: the
minimum of a user with nothing queued is lent out, and reserved again (for the next cores
that free up; nothing running is stopped) as soon as that user queues a job. Above their
share, a user may borrow idle cores, but only while no other user is waiting below their
own share. A request that does not fit is skipped, so smaller jobs behind it still run.
Memory is accounted per node. A whole-node job (``sub --exclusive``, ``-N K``) takes K
empty nodes at once or none, and counts all their cores.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from qpy_multiuser import placement, user_limits
from qpy_multiuser import rules as rules_module
from qpy_multiuser.nodes import Node

log = logging.getLogger("qpy.multiuser.allocator")
Part = tuple[Node, int, float]  # one node of a job: the node, the cores and memory there


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
    refused: tuple | None = None  # its first job refused: (job, cores, mem, attr, nodes);
    # nodes: the whole nodes it asked for, 0 for cores on any node
    # the other nodes of multi-node jobs (jobs holds the first): job -> (node, cores, mem)s
    spans: dict[int, tuple[tuple[str, int, float], ...]] = field(default_factory=dict)

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

    def add(self, user: User, job: int, node: Node, cores: int, mem: float,
            more: tuple[Part, ...] = ()) -> None:
        """Account a job on ``node`` (and the other nodes of a multi-node job, ``more``)."""
        self.reserved -= _reserved(user)  # which depends on the number of jobs
        user.jobs[job] = (node.name, cores, mem)
        if more:
            user.spans[job] = tuple((n.name, c, m) for n, c, m in more)
        self.reserved += _reserved(user)
        for part, part_cores, part_mem in ((node, cores, mem), *more):
            part.jobs.add((user.name, job))
            self._use(user, part, part_cores, part_mem)

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
        parts = (user.jobs.pop(job), *user.spans.pop(job, ()))
        self.reserved += _reserved(user)
        for name, cores, mem in parts:
            self._unuse(user, job, name, cores, mem)
        return True

    def _unuse(self, user: User, job: int, name: str, cores: int, mem: float) -> None:
        """Free what one node of a job held."""
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
            count = group.get("nodes", 1) if group.get("exclusive", False) else 0
            for job in group["jobs"]:
                if job in user.jobs:
                    continue
                parts, cores, took, limited = _place(self, user, k, mem, attr, count)
                if not parts:
                    refused = True
                    user.limited = user.limited or limited
                    user.refused = user.refused or (job, cores, took, attr, count)
                    break
                self.add(user, job, *parts[0], more=tuple(parts[1:]))
                self.set_queue(user, user.queue - 1)
                grants.append(_grant(job, parts, bool(count)))
        user.waiting = refused
        return grants, refused


def _place(alloc: Allocator, user: User, k: int, mem: float, attr: str | None,
           count: int) -> tuple[list[Part], int, float, str | None]:
    """Where one job of the user goes now: its parts (node, cores, memory), all
    ``count`` nodes whole for a whole-node job (``count`` > 0: all at once or none),
    with the cores and memory it takes in all, or no parts and the limit that holds
    it back."""
    parts: list[Part] = []
    if count:
        parts = [(n, n.cores, n.mem)
                 for n in placement.empty_nodes(alloc.buckets, k, mem, attr, count)]
        if len(parts) < count:
            return [], k * count, mem * count, None
        k, mem = sum(p[1] for p in parts), sum(p[2] for p in parts)
    limited = limit_reason(user, k, mem)
    if limited is not None or not alloc._may_grow(user, k):
        return [], k, mem, limited
    if not count:
        node = placement.node_for(alloc.buckets, k, mem, attr)
        parts = [(node, k, mem)] if node is not None else []
    return parts, k, mem, None


def _grant(job: int, parts: list[Part], whole: bool) -> dict:
    """A grant as the master gets it: the first node, and a whole-node job's size there
    and its other nodes."""
    node, cores, mem = parts[0]
    grant = {"job": job, "node": node.name, "address": node.address}
    if whole:
        grant.update(cores=cores, mem=mem)
    if len(parts) > 1:
        grant["others"] = [{"node": n.name, "address": n.address, "cores": c, "mem": m}
                           for n, c, m in parts[1:]]
    return grant


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
