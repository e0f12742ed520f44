"""The multiuser's request handlers: masters register (``hello``), ask for and release
slots (``slots``); users see the cluster (``status``); the admin runs the commands of
``admin_ops`` (``admin``). The state they act on is ``state.Multiuser``.

Each connection is bound to the user whose key authenticated it, so a request can only
ever act for that user. Entries are checked here, before the lock is taken, so nothing
malformed reaches the allocator.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

from qpy import attrs, enrolment, names, trace
from qpy.jobspec import MAX_NODES
from qpy.server import BadRequest, Denied, Handler, RequestError, Session
from qpy_multiuser import admin_ops, oplog, reported
from qpy_multiuser import explain as explaining
from qpy_multiuser.allocator import User
from qpy_multiuser.state import ADMIN, Multiuser

log = logging.getLogger("qpy.multiuser")

MultiuserHandler = Callable[[Multiuser, Session, dict], dict]
QUIET_ADMIN = ("status", "variables")  # admin commands that change nothing: not logged


def _master_only(session: Session) -> None:
    if session.user.startswith("@"):  # the admin, or an enrolment code
        raise Denied(f"this request is for a user's master, not {session.user}")


def _registered(mu: Multiuser, session: Session) -> None:
    """Under the lock: only the user's registered master may ask this (``alloc.user``
    would make anyone else a member again)."""
    if mu.masters.get(session.user) is not session:
        raise RequestError("register with hello first")


def _allowed(mu: Multiuser, session: Session) -> None:
    """Refuse, and then end, the session of a user who is no longer allowed."""
    why = mu.not_allowed(session.user)
    if why is not None:
        raise Denied(why, after=session.drop)


def job_item(item: dict) -> dict:
    """One running job a master reports in ``hello``; refused unless every field is sane
    (finite sizes: an infinite memory would leave its node's accounting NaN)."""
    ok = (isinstance(item.get("job"), int) and 0 <= item["job"] < 2 ** 63
          and isinstance(item.get("node"), str)
          and names.NODE_NAME.fullmatch(item["node"]) is not None
          and isinstance(item.get("cores"), int) and 0 < item["cores"] < 2 ** 63
          and isinstance(item.get("mem"), (int, float)) and not isinstance(item["mem"], bool)
          and math.isfinite(item["mem"]) and item["mem"] >= 0
          and _parts(item.get("more", [])))
    if not ok:
        raise BadRequest(f"bad running job entry {str(item)[:100]}")
    return item


def chained_item(item: dict) -> dict:
    """A job its master started in an ended job's slot (``chaining``)."""
    if not isinstance(item.get("ended"), int) or not 0 <= item["ended"] < 2 ** 63 \
            or item.get("more"):
        raise BadRequest(f"bad chained job entry {str(item)[:100]}")
    return job_item(item)


def _parts(more: object) -> bool:
    """Whether a multi-node job's other nodes are sane: [node, cores, mem] each."""
    return isinstance(more, list) and len(more) <= MAX_NODES and all(
        isinstance(p, list) and len(p) == 3 and isinstance(p[0], str)
        and names.NODE_NAME.fullmatch(p[0]) is not None
        and isinstance(p[1], int) and not isinstance(p[1], bool) and 0 < p[1] < 2 ** 63
        and isinstance(p[2], (int, float)) and not isinstance(p[2], bool)
        and math.isfinite(p[2]) and p[2] >= 0 for p in more)


def want(group: dict) -> dict:
    """One group of equal jobs in a ``slots`` request; the attribute expression is
    compiled here, so a bad one is the asker's error and not the allocator's."""
    ok = (isinstance(group.get("cores"), int) and group["cores"] > 0
          and isinstance(group.get("mem"), (int, float)) and group["mem"] > 0
          and (group.get("attr") is None or isinstance(group.get("attr"), str))
          and isinstance(group.get("exclusive", False), bool)
          and isinstance(group.get("nodes", 1), int) and not isinstance(group.get("nodes"), bool)
          and 1 <= group.get("nodes", 1) <= MAX_NODES
          and isinstance(group.get("jobs"), list)
          and all(isinstance(j, int) and not isinstance(j, bool) for j in group["jobs"]))
    if not ok:
        raise BadRequest(f"bad slot request {str(group)[:100]}")
    if group.get("attr"):
        try:
            attrs.compile_expr(group["attr"])
        except attrs.AttrError as exc:
            raise BadRequest(str(exc)) from None
    return group


def hello(mu: Multiuser, session: Session, msg: dict) -> dict:
    """A master (re)registers with what still runs: its allocations become exactly that."""
    _master_only(session)
    running = [job_item(item) for item in msg["running"]]
    with mu.lock:
        refused = mu.not_allowed(session.user) is not None
        if refused:
            _report_ended(mu, session.user, running)
        else:
            reply = _register(mu, session, running, msg["queue_size"])
    mu.flush_wakes()
    if refused:
        _allowed(mu, session)
    return reply


def _register(mu: Multiuser, session: Session, running: list[dict], queue_size: int) -> dict:
    """The master of an allowed user registers (under the lock)."""
    old = mu.masters.get(session.user)
    if old is not None and old is not session:
        old.drop()
    mu.masters[session.user] = session
    session.persistent = True  # a master's link: it may wait for events for days
    user = mu.alloc.user(session.user)
    trust_fit = mu.lost_ledger and user.name not in mu.registered
    left_out = reported.reconcile(mu.alloc, user, running, trust_fit)
    mu.registered.add(user.name)
    mu.ledger.replace(user.name, user.jobs, user.spans)
    mu.alloc.set_queue(user, max(0, queue_size))
    log.info("master of %s registered with %d running jobs", user.name, len(user.jobs))
    if left_out:
        log.warning("master of %s reported %d running jobs this multiuser did not grant "
                    "or that do not fit its nodes; not counted: %s", user.name,
                    len(left_out), str(left_out[:20])[1:-1], extra={"rate_key": user.name})
    mu.changed()
    return {"nodes": [n.public() for n in mu.alloc.nodes.values()], "unaccounted": left_out,
            "interactive": mu.policy.public()}


def _report_ended(mu: Multiuser, name: str, running: list[dict]) -> None:
    """A removed user's master says what still runs: the jobs that ended free their
    cores (nothing new is believed: the user has no share)."""
    user = mu.alloc.users.get(name)
    if user is None:
        return
    before = user.used
    reported.reconcile(mu.alloc, user, running, False)
    mu.ledger.replace(name, user.jobs, user.spans)
    if user.used < before:
        mu.changed()


def slots(mu: Multiuser, session: Session, msg: dict) -> dict:
    """Release ended jobs' slots and grant what fits of ``want``; wake others if cores
    were freed for them."""
    _master_only(session)
    trace.mark("multiuser: slots asked")
    _allowed(mu, session)
    wanted = [want(g) for g in msg["want"]]
    chained = [chained_item(item) for item in msg.get("chained", ())]
    with mu.lock:
        _registered(mu, session)
        started = time.perf_counter()
        user = mu.alloc.user(session.user)
        had_queue = user.queue > 0
        took = [c for c in chained if _chain(mu, user, c)]
        released = [job for job in msg["release"] if mu.alloc.remove(user, job)]
        mu.idle.forget(user.name, released)
        grants, refused = mu.alloc.request(user, wanted, msg["queue_size"])
        decided = time.perf_counter() - started
        limit = user.limited
        why = oplog.refusal(mu.alloc, user) if refused else None
        granted = [(j, *user.jobs[j], user.spans.get(j))  # a chained job may have
                   for j in [c["job"] for c in took] + [g["job"] for g in grants]
                   if j in user.jobs]  # ended (released, or chained on) since
        mu.ledger.record(user.name, released + [c["ended"] for c in took], granted)
        chain = mu.chains.permit(user.name, not user.limited and user.member
                                 and not mu.other_waits(user.name))
        if user.queue > 0:  # nobody else's job may take a slot another user frees
            mu.chains.take_back(skip=user.name)
        if released or (had_queue and user.queue <= 0):  # cores or borrowing rights freed
            mu.changed(skip=user.name)
        elif refused and mu.alloc.free_cores > 0:  # idle cores this user cannot use
            mu.wake(skip=user.name)
        if refused:  # idle sessions of others may have to make room (idle_action preempt)
            mu.idle.poke()
    mu.flush_wakes()
    trace.mark("multiuser: slots decided")
    asked = sum(len(g["jobs"]) for g in wanted)
    return {"grants": grants, "waiting": refused, "decision_us": round(decided * 1e6, 1),
            "chain": chain,
            "more": not refused and len(grants) == asked and msg["queue_size"] > asked,
            "limit": limit,  # logged once the reply is out: not on the way to a job's start
            "_after": (lambda: oplog.decided(session.user, granted, why))
            if granted or why else None}


def _chain(mu: Multiuser, user: User, item: dict) -> bool:
    """A job that took the slot of the user's ended job (``chaining``): the allocation
    changes hands. Only ever within what that job held: a master cannot grow what it
    holds this way. False if it was counted already (told again after a lost reply),
    or is not believed."""
    held = user.jobs.get(item["ended"])
    if item["job"] in user.jobs or held is None:
        return False
    if item["ended"] in user.spans or item["node"] != held[0] or item["cores"] > held[1] \
            or item["mem"] > held[2]:
        log.warning("master of %s chained job %d into more than job %d held; not counted",
                    user.name, item["job"], item["ended"], extra={"rate_key": user.name})
        return False
    mu.alloc.unaccount(user, item["ended"])
    mu.alloc.add(user, item["job"], mu.alloc.node_or_kept(item["node"]), item["cores"],
                 item["mem"])
    return True


def status(mu: Multiuser, session: Session, msg: dict) -> dict:
    _allowed(mu, session)
    return mu.snapshot()


def explain(mu: Multiuser, session: Session, msg: dict) -> dict:
    """For ``qpy why``: what keeps a job of this shape from starting now, as the
    allocator decides (at share while others wait, which node is closest)."""
    _master_only(session)
    _allowed(mu, session)
    group = want({"cores": msg["cores"], "mem": msg["mem"], "attr": msg["attr"], "jobs": [],
                  **({"nodes": msg["nodes"]} if msg.get("nodes") else {})})
    with mu.lock:
        _registered(mu, session)
        user = mu.alloc.user(session.user)
        return explaining.explain(mu.alloc, user, group["cores"], float(group["mem"]),
                                  group["attr"], group.get("nodes", 0))


def session_item(item: dict) -> dict:
    """One running session of an ``idle_report``; refused unless every field is sane."""
    ok = (isinstance(item.get("job"), int) and 0 <= item["job"] < 2 ** 63
          and isinstance(item.get("node"), str)
          and (item.get("idle") is None or isinstance(item["idle"], (int, float))
               and 0 <= item["idle"] < 1e10)
          and (item.get("attached") is None or isinstance(item["attached"], int)))
    if not ok:
        raise BadRequest(f"bad session entry {str(item)[:100]}")
    return item


def idle_report(mu: Multiuser, session: Session, msg: dict) -> dict:
    """A master's interactive sessions and their idle times, for the idle policy and the
    status; only jobs this user holds cores for count. As for ``slots``, only from the
    user's registered master (``alloc.user`` would make anyone else a member again)."""
    _master_only(session)
    _allowed(mu, session)
    items = [session_item(item) for item in msg["sessions"]]
    with mu.lock:
        _registered(mu, session)
        held = mu.alloc.user(session.user).jobs
        mu.idle.report(session.user, [i for i in items if i["job"] in held], time.time())
    return {}

def admin(mu: Multiuser, session: Session, msg: dict) -> dict:
    """An admin command, for the admin key only."""
    if session.user != ADMIN:
        log.warning("user %s tried admin command %s", session.user, msg["command"],
                    extra={"rate_key": session.user})
        raise Denied("admin commands need the admin key")
    op = admin_ops.OPS.get(msg["command"])
    if op is None:
        raise BadRequest(f"unknown admin command {msg['command']!r}")
    if msg["command"] not in QUIET_ADMIN:
        log.info("admin command: %s", " ".join([msg["command"], *map(repr, msg["args"])]))
    try:
        with mu.lock:
            return op(mu, msg["args"])
    finally:
        mu.flush_wakes()


def join(mu: Multiuser, session: Session, msg: dict) -> dict:
    """A new user's enrolment code (the session's identity ``@join:USER`` proved it):
    their bundle, once; then the session ends."""
    user = enrolment.joining(session.user)
    if user is None:
        raise Denied("join is served to an enrolment code only (qpy join CODE)")
    with mu.lock:
        if not mu.enrolments.use(user):
            raise Denied(f"the enrolment code of {user} was already used", after=session.drop)
        why = mu.not_allowed(user)
        if why is not None:
            raise Denied(why, after=session.drop)
        bundle = admin_ops.admit(mu, user)
    mu.flush_wakes()
    log.info("%s fetched their key with an enrolment code (%s)", user, session.peer)
    return {"bundle": bundle, "_after": session.drop}


HANDLERS: dict[str, MultiuserHandler] = {"hello": hello, "slots": slots, "status": status,
                                         "explain": explain, "admin": admin, "join": join,
                                         "idle_report": idle_report}


def make_table(mu: Multiuser) -> dict[str, Handler]:
    """The request table the server dispatches on, each handler bound to ``mu`` and
    passing through ``_kept``, the one place saveMessages sees every request."""
    return {kind: _kept(mu, kind, handler) for kind, handler in HANDLERS.items()}


def _kept(mu: Multiuser, kind: str, handler: MultiuserHandler) -> Handler:
    """``handler`` bound to ``mu``; while saveMessages is on, each request of a master or
    user and its reply (or refusal) is kept for ``variables``. The admin's own commands
    are not: they are the admin's, and ``adduser`` replies carry a user's key; nor are
    enrolments, whose replies carry one too."""

    def serve(session: Session, msg: dict) -> dict:
        if not mu.messages.on or session.user.startswith("@"):  # admin, enrolment
            return handler(mu, session, msg)
        started = time.time()
        try:
            reply = handler(mu, session, msg)
        except Exception as exc:  # kept as the error reply the server will send
            error = str(exc) if isinstance(exc, RequestError) else \
                f"internal error: {type(exc).__name__}: {exc}"
            mu.messages.add(started, session.user, kind, msg, {"error": error})
            raise
        mu.messages.add(started, session.user, kind, msg, reply)
        return reply

    return serve
