"""``qpy why ID``: why a queued job has not started, or where a job is.

The reasons are tried in the issue's order of precedence: held; the queue paused;
waiting for a dependency; a limit (the array's %MAX, then the administrator's per-user
limits); the user at their share while others wait; no up node with the free cores,
memory or attributes now. The first three and the array's cap are the master's own; for
the rest it asks the multiuser (``explain``), which answers from the allocator's state.
"""

from __future__ import annotations

import time

from qpy.model import Job
from qpy.server import NotFound
from qpy.states import DONE, QUEUE, RUNNING
from qpy.timetext import iso
from qpy.words import plural
from qpy_master.handler_args import ask_multiuser

Why = tuple[str, str, dict]  # the reason's kind, its text, its numbers


def _local(stamp: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp or 0))


def why(m, job_id: int) -> dict:
    """The ``why`` reply for one job of the master ``m``."""
    with m.lock:
        job = m.records.get(job_id)
        if job is None:
            raise NotFound(f"job {job_id} not found")
        found = _where(job) if job.status != QUEUE else _master_reasons(m, job) or _limit(m, job)
        attr = m.pool.avoiding([{"attr": job.attr}])[0]["attr"]
        rank = m.records.queue.rank(job.id) if job.status == QUEUE else None
    if found is None:
        found = _allocator(m, job, attr, rank)
    kind, text, details = found
    return {"text": text + "\n", "job": job.id, "status": job.status, "reason": kind,
            "details": details}


def _where(job: Job) -> Why:
    """A job that is not queued: where it runs, or how it ended."""
    if job.status == RUNNING:
        where = "+".join(job.nodes) if job.nodes else job.node
        return ("running", f"running on {where} since {_local(job.t_start)}",
                {"node": job.node, "since": iso(job.t_start), "nodes": job.nodes})
    details = {"node": job.node, "ended": iso(job.t_end), "exit_code": job.exit_code,
               "signal": job.signal, "why": job.reason}
    text = f"{job.status}" + (f" on {job.node}" if job.node else "")
    text += f" at {_local(job.t_end)}"
    if job.status == DONE:
        text += f", signal {job.signal}" if job.signal is not None else \
            f", exit code {job.exit_code}"
    if job.reason:
        text += f": {job.reason}"
    return job.status, text, details


def _master_reasons(m, job: Job) -> Why | None:
    """The master's own reasons: held, paused, a dependency."""
    if job.held:
        return "held", f"held: it starts only after 'qpy release {job.id}'", {}
    if m.paused:
        return "paused", "the queue is paused: 'qpy ctrlQueue continue' lets jobs start", {}
    pending = m.records.gates.pending(job.id)
    if pending:
        first = min(pending)
        dep = m.records.live(first)
        status = dep.status if dep is not None else "ended"
        more = f", and {len(pending) - 1} more" if len(pending) > 1 else ""
        kind = "afterok" if pending[first] else "after"
        return ("dependency", f"waiting for dependency {first} ({status}, {kind}){more}",
                {"dependency": first, "dependency_status": status,
                 "waiting_for": sorted(pending)})
    return None


def _limit(m, job: Job) -> Why | None:
    """A limit the job is held back by that the master knows: its array's %MAX (the
    per-user limits are the multiuser's: ``_user_limit``)."""
    cap = m.records.gates.cap(job)
    if cap is None or job.id in cap.admitted:
        return None
    return ("limit",
            f"limit: array {job.array_id} runs at most {plural(cap.limit, 'task')} at "
            f"once (%{cap.limit}); "
            f"{len(cap.running)} run{'s' if len(cap.running) == 1 else ''} now and "
            f"{len(cap.admitted)} more go first",
            {"limit": "array", "array_id": job.array_id, "max": cap.limit,
             "running": len(cap.running), "next": len(cap.admitted)})


def _allocator(m, job: Job, attr: str | None, rank: int | None) -> Why:
    """The share and node reasons, from the multiuser's allocator."""
    reply = ask_multiuser(m, {"type": "explain", "cores": job.n_cores, "mem": job.mem,
                              "attr": attr, **({"nodes": job.n_nodes} if job.exclusive
                                               else {})})
    return (_user_limit(reply) or _share(reply, job) or _nodes(reply, job)
            or ("next", f"nothing holds it back: it is number {rank} in your queue and "
                        "starts as soon as its slot is granted", {"position": rank}))


def _user_limit(r: dict) -> Why | None:
    """The administrator's per-user limit that keeps the job from starting now (``qpy
    check`` names it too), as the allocator found it."""
    if not r.get("limit"):
        return None
    return ("limit", f"limit: the administrator's {r['limit']}",
            {"limit": "user", "reason": r["limit"]})


def _share(r: dict, job: Job) -> Why | None:
    share = r["minimum"] + r["extra"]
    numbers = {"used": r["used"], "share": share, "minimum": r["minimum"],
               "extra": r["extra"], "waiting": r["waiting"]}
    if r["above_share"]:
        others = ", ".join(f"{w['user']} uses {w['used']} of {w['share']}"
                           for w in r["waiting"])
        return ("share", f"you use {plural(r['used'], 'core')} and your share is {share} "
                         f"({r['minimum']} guaranteed + {r['extra']} extra), while other "
                         f"users wait below theirs: {others}", numbers)
    if not r["grow"] and r["free"] >= job.n_cores:
        kept = r["free"] - max(r["free_for"], 0)
        return ("share", f"of the {plural(r['free'], 'core')} free, {kept} are kept for other "
                         "users' guaranteed minimums", {**numbers, "free": r["free"],
                                                        "kept": kept})
    return None


def _whole(r: dict, job: Job) -> Why | None:
    """A whole-node job (``--exclusive``, ``-N``) for which too few nodes are empty."""
    free = r.get("whole")
    if free is None or free >= job.n_nodes:
        return None
    need = "a free whole node" if job.n_nodes == 1 else f"{job.n_nodes} free whole nodes"
    cores = plural(job.n_cores, "core")
    size = f" with {cores} and {job.mem:g} GB or more" if job.attr is None \
        else f" with {job.attr}, {cores} and {job.mem:g} GB or more"
    return ("nodes", f"needs {need}{size}; {free} {'is' if free == 1 else 'are'} free now",
            {"whole": free, "nodes": job.n_nodes, "down": r["down"]})


def _nodes(r: dict, job: Job) -> Why | None:
    if job.exclusive:
        return _whole(r, job)
    if r["node"] is not None and r["grow"]:
        return None
    wanted = f"{plural(job.n_cores, 'core')} and {job.mem:g} GB"
    details = {"closest": r["closest"], "down": r["down"]}
    if not r["matching"]:
        what = f"the attributes {job.attr}" if job.attr else "its size"
        down = f" ({', '.join(r['down'])} {'is' if len(r['down']) == 1 else 'are'} down)" \
            if r["down"] else ""
        return "nodes", f"no up node has {what} now{down}", details
    best = r["closest"]
    if best is None:
        return "nodes", f"no up node has {wanted} free now", details
    return ("nodes", f"no up node has {wanted} free now; the closest, {best['name']}, has "
                     f"{plural(best['free_cores'], 'core')} and {best['free_mem']:g} GB free",
            details)
