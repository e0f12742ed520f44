"""``qpy why`` as the allocator sees it: what keeps a job of some size from starting now."""

from __future__ import annotations

from qpy import attrs
from qpy_multiuser import placement
from qpy_multiuser.allocator import Allocator, User, limit_reason


def explain(alloc: Allocator, user: User, k: int, mem: float, attr: str | None,
            whole: int = 0) -> dict:
    """What keeps a job of ``user`` asking for ``k`` cores, ``mem`` GB and ``attr`` from
    starting now, decided as ``request`` would (``qpy why``): the user limit that holds
    it (``limit``), may the user grow by ``k`` (or are they at their share while others
    wait below theirs, or are the free cores kept for others' minimums), and which node
    would take it, or which comes closest. For a
    job of ``whole`` whole nodes: how many fitting nodes are empty now (``whole``), and
    the cores it would take on the emptiest of them."""
    empty = placement.empty_nodes(alloc.buckets, k, mem, attr, len(alloc.nodes)) \
        if whole else []
    taken = mem
    if whole:
        enough = len(empty) >= whole
        k = sum(n.cores for n in empty[:whole]) if enough else k * whole
        taken = sum(n.mem for n in empty[:whole]) if enough else mem * whole
    waiting = [u for u in alloc.users.values()
               if u is not user and u.queue > 0 and u.used < u.share]
    matching = attrs.matching((n for n in alloc.nodes.values() if n.name in alloc.configured),
                              attr)
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
            "limit": limit_reason(user, k, taken), "grow": alloc._may_grow(user, k),
            "above_share": user.used + k > max(user.share, user.minimum) and bool(waiting),
            "waiting": [{"user": u.name, "used": u.used, "share": u.share} for u in waiting],
            "free": alloc.free_cores, "free_for": alloc._free_for(user),
            "node": node.name if node else None, "closest": closest, "matching": len(up),
            "down": sorted(n.name for n in matching if not n.up),
            **({"whole": len(empty)} if whole else {})}
