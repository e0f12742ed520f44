"""``qpy status`` as text: a users table, a nodes table, and a usage bar per node."""

from __future__ import annotations

BAR_WIDTH = 16
RULE = "=" * 88


def bar(used: int, total: int, width: int = BAR_WIDTH) -> str:
    """``[****....]``: one mark per core on small nodes, scaled on big ones."""
    if total <= 0:
        return "[" + " " * min(width, 1) + "]"
    if total <= width:
        return "[" + "*" * min(used, total) + "." * max(total - used, 0) + "]"
    filled = round(width * min(used, total) / total)
    return "[" + "*" * filled + "." * (width - filled) + "]"


def users_table(users: list[dict]) -> str:
    if not users:
        return "No users.\n" + RULE + "\n"
    head = f"{'user':<24} {'using cores':>11} {'guaranteed':>10} {'extra':>6} {'queue size':>10}"
    rows = [f"{u['user']:<24} {u['used']:>11} {u['minimum']:>10} {u['extra']:>6} "
            f"{u['queue']:>10}" for u in users]
    return "\n".join([head, "-" * 88, *rows, RULE]) + "\n"


def _number(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _state(n: dict) -> str:
    """up, down, unknown (not measured yet) or draining (removed, its jobs still run)."""
    return n.get("state") or ("up" if n.get("up", True) else "down")


def _counted(n: dict) -> bool:
    """Whether the node's cores are in the summary's total: up, or draining its jobs."""
    return _state(n) in ("up", "draining")


def drain_state(n: dict) -> str | None:
    """``draining`` (jobs still run there) or ``drained``, for a node the admin drained."""
    if n.get("drain_since") is None:
        return None
    return "draining" if n.get("used_cores") or n.get("used_mem") else "drained"


def _node_row(n: dict) -> str:
    state = _state(n)
    if state == "up":
        state = drain_state(n) or state
    label = n["name"] + ("" if state == "up" else f" ({state})")
    attrs = ",".join(n.get("attrs") or []) or "-"
    size = "?" if state == "unknown" and not n["cores"] else n["cores"]  # not measured yet
    return (f"{label:<20} {bar(n['used_cores'], n['cores']):<{BAR_WIDTH + 2}} {n['used_cores']:>5}/"
            f"{size:<5} {_number(n.get('load'), '.2f'):>6} "
            f"{_number(n.get('mem_in_use'), '.1f'):>7} {n['used_mem']:>7.1f} {n['mem']:>7.1f}"
            f"  {attrs}")


def nodes_table(nodes: list[dict]) -> str:
    if not nodes:
        return "No nodes.\n"
    head = (f"{'node':<20} {'usage':<{BAR_WIDTH + 2}} {'cores':>11} {'load':>6} "
            f"{'mem use':>7} {'mem req':>7} {'mem tot':>7}  attributes")
    used = sum(n["used_cores"] for n in nodes)  # every core in use: the users table's sum
    total = sum(n["cores"] for n in nodes if _counted(n))
    up = [n["name"] for n in nodes if _state(n) == "up"]
    lines = [head, "-" * 88, *(_node_row(n) for n in nodes), RULE,
             f"There are {used} out of a total of {total} cores being used."]
    outside = sum(n["used_cores"] for n in nodes if not _counted(n))
    if outside:
        lines.append(f"  ({outside} of them on nodes that are down or not measured yet, "
                     "whose cores the total leaves out)")
    lines.append(f"Up nodes ({len(up)} of {len(nodes)}): {', '.join(up) or 'none'}")
    unknown = [n["name"] for n in nodes if _state(n) == "unknown"]
    if unknown:
        lines.append(f"Not measured yet: {', '.join(unknown)} (not in the total until "
                     "node monitoring's first sample)")
    draining = [n["name"] for n in nodes if _state(n) == "draining"]
    if draining:
        lines.append(f"Draining (removed from nodes, jobs still running): {', '.join(draining)}")
    down = [n for n in nodes if _state(n) == "down"]
    if down:
        lines.append(f"Down nodes: {', '.join(n['name'] for n in down)}")
        lines += [f"  {n['name']}: {n['reason']}" for n in down if n.get("reason")]
    lines += drained_lines(nodes)
    busy = [f"{n['name']} ({n['outsiders']})" for n in nodes if n.get("outsiders")]
    if busy:
        lines.append(f"Processes not started by qpy: {', '.join(busy)}")
    disks = [f"{n['name']} {n['disk']['used']:g}/{n['disk']['total']:g} GB"
             for n in nodes if (n.get("disk") or {}).get("total")]
    if disks:
        lines.append(f"Disk of check_dir: {', '.join(disks)}")
    modes = memory_limits(nodes)
    if modes:
        lines.append(f"Memory limits: {modes}")
    return "\n".join(lines) + "\n"


def drained_lines(nodes: list[dict]) -> list[str]:
    """``Drained nodes: n1, n2`` and a line per node: draining or drained, since when,
    and why."""
    import time

    drained = [n for n in nodes if n.get("drain_since") is not None]
    if not drained:
        return []
    lines = [f"Drained nodes: {', '.join(n['name'] for n in drained)}"]
    for n in drained:
        since = time.strftime("%Y-%m-%d %H:%M", time.localtime(n["drain_since"]))
        why = f": {n['drain_reason']}" if n.get("drain_reason") else ""
        lines.append(f"  {n['name']}: {drain_state(n)} since {since}{why}")
    return lines
def sessions_table(sessions: list[dict]) -> str:
    """Interactive sessions (``qpy connect``) with their idle times, if there are any."""
    if not sessions:
        return ""
    from qpy.render import idle_text

    lines = ["", f"{'interactive session':<24} {'job':>8}  {'node':<20} {'attached':>8} "
             f"{'idle':>12}", "-" * 88]
    lines += [f"{s['user']:<24} {s['job']:>8}  {s['node']:<20} "
              f"{'-' if s['attached'] is None else s['attached']:>8} "
              f"{'-' if s['idle'] is None else idle_text(s['idle']):>12}" for s in sessions]
    return "\n".join(lines) + "\n"


def memory_limits(nodes: list[dict]) -> str:
    """``cgroup v1 (node1, node2); watchdog (node3)``: what enforces each node's memory
    limits, nodes not measured yet left out."""
    by_mode: dict[str, list[str]] = {}
    for n in nodes:
        if n.get("memory_limit"):
            mode = n["memory_limit"] + (" + RLIMIT_AS" if n.get("rlimit_as") else "")
            by_mode.setdefault(mode, []).append(n["name"])
    return "; ".join(f"{mode} ({', '.join(names)})" for mode, names in by_mode.items())


def render(users: list[dict], nodes: list[dict], sessions: list[dict] | None = None) -> str:
    return users_table(users) + "\n" + nodes_table(nodes) + sessions_table(sessions or [])
