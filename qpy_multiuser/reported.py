"""What the multiuser is told of running jobs: its ledger at start (``restore``) and each
master's ``hello`` (``reconcile``), turned into the allocator's accounting.

A job holds one node, or several (``qpy sub -N K``): a reported job is its first node
(``node``, ``cores``, ``mem``) and, for a multi-node job, ``more``: [node, cores, mem] for
each other node. Both the ledger and the masters report in that shape.
"""

from __future__ import annotations

import math

from qpy_multiuser.allocator import Allocator, User


def restore(alloc: Allocator, user: User, running: list[dict]) -> None:
    """Take the user's allocations from the ledger, the multiuser's own record: a node
    removed meanwhile is kept (down) until its jobs end."""
    for item in running:
        if not math.isfinite(item["mem"]) or item["cores"] <= 0:
            continue  # written by an older version that believed any hello
        more = tuple((alloc.node_or_kept(n), int(c), float(m)) for n, c, m in _more(item))
        alloc.add(user, int(item["job"]), alloc.node_or_kept(item["node"]),
                  int(item["cores"]), float(item["mem"]), more)


def _more(item: dict) -> list:
    """The other nodes of a reported multi-node job: [node, cores, mem] each."""
    return item.get("more") or []


def reconcile(alloc: Allocator, user: User, running: list[dict], trust_fit: bool) -> list[int]:
    """Make the user's allocations the jobs their master says are running, as far as
    they are believable, and return the jobs left out.

    A job this multiuser granted counts with the nodes and sizes it was granted. Any
    other job counts only if ``trust_fit`` (the multiuser lost its ledger and cannot
    know what it granted) and it fits on configured nodes that are up, in what the
    jobs before it left free. A job reported twice counts once."""
    granted, spans = dict(user.jobs), dict(user.spans)
    for job in list(user.jobs):
        alloc.unaccount(user, job)
    left_out: list[int] = []
    others: list[dict] = []
    for item in running:
        job = item["job"]
        entry, span = granted.pop(job, None), spans.pop(job, ())
        if entry is not None and [entry[0], *(p[0] for p in span)] == [
                item["node"], *(p[0] for p in _more(item))]:
            alloc.add(user, job, alloc.node_or_kept(entry[0]), entry[1], entry[2],
                      tuple((alloc.node_or_kept(n), c, m) for n, c, m in span))
        elif job not in user.jobs:
            others.append(item)
        else:
            left_out.append(job)
    others = _chained(alloc, user, others, granted, spans)
    for item in others:
        parts = [(item["node"], item["cores"], float(item["mem"])), *map(tuple, _more(item))]
        nodes = [alloc.nodes.get(name) for name, _, _ in parts]
        fits = (trust_fit and item["job"] not in user.jobs
                and len({name for name, _, _ in parts}) == len(parts)
                and all(node is not None and node.up and node.name in alloc.configured
                        and cores <= node.free_cores and mem <= node.free_mem
                        for node, (_, cores, mem) in zip(nodes, parts, strict=True)))
        if fits:
            alloc.add(user, item["job"], nodes[0], parts[0][1], parts[0][2], tuple(
                (node, cores, float(mem)) for node, (_, cores, mem) in zip(
                    nodes[1:], parts[1:], strict=True)))
        else:
            left_out.append(item["job"])
    alloc.forget_if_gone(user)
    return left_out


def _chained(alloc: Allocator, user: User, others: list[dict], ended: dict,
             spans: dict) -> list[dict]:
    """Reported jobs that a master started in the slot of one of its ended jobs and had
    not told of yet (chaining tells afterwards, and either daemon may restart first):
    each counts in place of one granted job that is no longer reported, on the same
    node, within its cores and memory, so nothing is believed beyond what the user
    held. Returns the others."""
    rest = []
    for item in others:
        slot = None if _more(item) or item["job"] in user.jobs else next(
            (job for job, (node, cores, mem) in ended.items() if job not in spans
             and node == item["node"] and item["cores"] <= cores and item["mem"] <= mem),
            None)
        if slot is None:
            rest.append(item)
            continue
        del ended[slot]
        alloc.add(user, item["job"], alloc.node_or_kept(item["node"]), item["cores"],
                  float(item["mem"]))
    return rest
