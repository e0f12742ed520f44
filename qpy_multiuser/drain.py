"""Node drain: ``qpy-admin drain NODE... [--reason TEXT]`` and ``qpy-admin resume NODE...``.

A drained node leaves the pool (as a node that is down does: no new job starts there and
the shares follow the cores left) while the jobs running there finish; it is *draining*
while it still runs jobs and *drained* once they have ended. Monitoring goes on watching
it, and a node that is down and drained stays drained when it comes back. The drains are
kept in the ledger, so a restarted multiuser, and a reloaded ``nodes`` file, keep them.
"""

from __future__ import annotations

import logging
import time

from qpy.server import BadRequest, NotFound
from qpy.words import plural

log = logging.getLogger("qpy.multiuser")
REASON_CHARS = 200


def apply(mu) -> None:
    """Mark the configured nodes the ledger has as drained (at start, after a reload)."""
    drains = mu.ledger.drains()
    for name, node in mu.alloc.nodes.items():
        if name in drains and name in mu.alloc.configured:
            node.drain_since, node.drain_reason = drains[name]
    if drains:
        mu.alloc.pool_changed("the drained nodes were marked")


def _nodes(mu, names: list[str], command: str) -> list:
    if not names:
        raise BadRequest(f"{command} takes one or more node names")
    unknown = [n for n in names if n not in mu.alloc.configured]
    if unknown:
        raise NotFound(f"no node named {', '.join(unknown)} in the nodes file")
    return [mu.alloc.nodes[n] for n in dict.fromkeys(names)]


def state(node) -> str:
    """``draining`` while jobs still run there, then ``drained``."""
    return "draining" if node.jobs else "drained"


def drain(mu, args: list[str]) -> dict:
    """``drain REASON NODE...`` (REASON may be empty): nothing new starts on the nodes; a
    node drained already keeps its time and takes the new reason, if one is given."""
    if not args:
        raise BadRequest("drain takes a reason (may be empty) and node names")
    reason = " ".join(args[0].split())[:REASON_CHARS] or None
    lines = []
    nodes = _nodes(mu, args[1:], "drain")
    for node in nodes:
        if node.drain_since is None:
            node.drain_since = time.time()
        node.drain_reason = reason or node.drain_reason
        mu.ledger.set_drain(node.name, node.drain_since, node.drain_reason)
        running = len(node.jobs)
        log.info("node %s %s by the admin%s", node.name, state(node),
                 f": {node.drain_reason}" if node.drain_reason else "")
        lines.append(f"Node {node.name} {state(node)}: no new job starts there" +
                     (f"; {plural(running, 'running job')} finish."
                      if running else "."))
    _pool_changed(mu, nodes, "drained")
    return {"text": "\n".join(lines) + "\n"}


def resume(mu, args: list[str]) -> dict:
    """``resume NODE...``: the nodes take new jobs again."""
    lines, resumed = [], []
    for node in _nodes(mu, args, "resume"):
        if node.drain_since is None:
            lines.append(f"Node {node.name} was not drained.")
            continue
        node.drain_since = node.drain_reason = None
        mu.ledger.set_drain(node.name, None)
        resumed.append(node)
        log.info("node %s resumed by the admin", node.name)
        lines.append(f"Node {node.name} resumed: new jobs may start there.")
    _pool_changed(mu, resumed, "resumed")
    return {"text": "\n".join(lines) + "\n"}


def _pool_changed(mu, nodes: list, what: str) -> None:
    """The pool follows the nodes drained or resumed: its indexes, totals and shares once
    for all of them (with 1,000 nodes, once per node would redo them 1,000 times), then
    the masters hear of it."""
    if nodes:
        names = ", ".join(node.name for node in nodes)
        mu.alloc.pool_changed(f"node {names} was {what}" if len(nodes) == 1
                              else f"nodes {names} were {what}")
    mu.announce_nodes()
    mu.changed()
