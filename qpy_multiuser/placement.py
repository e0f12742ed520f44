"""Which node a job goes to: the allocator keeps its usable nodes in *buckets* by their
number of free cores (ordinary and multicore-preferred apart), and these functions keep
the buckets and look into the few that can fit a job, so a decision does not grow with
the number of nodes."""

from __future__ import annotations

from qpy import attrs
from qpy_multiuser.nodes import Node

# (ordinary, multicore-preferred): free cores -> the nodes with that many, by name
Buckets = tuple[dict[int, dict[str, Node]], dict[int, dict[str, Node]]]


def put(buckets: Buckets, node: Node, sign: int) -> None:
    """Put ``node`` into (+1) or take it out of (-1) the bucket of its free cores."""
    index = buckets[node.pref_multicore]
    if sign > 0:
        index.setdefault(node.free_cores, {})[node.name] = node
    else:
        same = index[node.free_cores]
        del same[node.name]
        if not same:
            del index[node.free_cores]


def node_for(buckets: Buckets, k: int, mem: float, attr: str | None) -> Node | None:
    """Single-core jobs go to the emptiest ordinary node and use multicore-preferred
    nodes only when nothing else fits; multicore jobs take the tightest fit,
    multicore-preferred nodes first."""
    expr = attrs.compile_expr(attr) if attr else None
    passes = ((False, True), (True, True)) if k == 1 else ((True, False), (False, False))
    for pref, emptiest in passes:
        index = buckets[pref]
        for free in sorted((f for f in index if f >= k), reverse=emptiest):
            for node in index[free].values():
                if node.free_mem >= mem and (expr is None or expr.matches(node.attrs,
                                                                          node.name)):
                    return node
    return None


def empty_nodes(buckets: Buckets, k: int, mem: float, attr: str | None,
                count: int) -> list[Node]:
    """For a whole-node job (``sub --exclusive``, ``-N``): up to ``count`` usable nodes
    with at least ``k`` cores and ``mem`` GB on which nothing runs, the smallest first
    (multicore-preferred ones before the others)."""
    expr = attrs.compile_expr(attr) if attr else None
    found: list[Node] = []
    for pref in (True, False):
        index = buckets[pref]
        for free in sorted(f for f in index if f >= k):
            for node in index[free].values():
                if (not node.jobs and free == node.cores and node.mem >= mem
                        and (expr is None or expr.matches(node.attrs, node.name))):
                    found.append(node)
                    if len(found) == count:
                        return found
    return found
