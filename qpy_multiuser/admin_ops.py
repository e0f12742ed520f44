"""The admin commands the multiuser serves (all need the admin key).

Reloads are all-or-nothing: a malformed file is refused with ``file:line: reason`` and the
running configuration stays as it was.
"""

from __future__ import annotations

import json

from qpy import enrolment, names, paths, status_view
from qpy.server import BadRequest, NotFound, RequestError
from qpy_multiuser import drain, interactive, user_limits
from qpy_multiuser import nodes as nodes_module
from qpy_multiuser import rules as rules_module


def _refuse(exc: Exception) -> RequestError:
    return BadRequest(str(exc))


def finish(mu, args: list[str]) -> dict:
    """Stop the multiuser; with the argument ``unused``, only if no master is connected
    (``qpy finish`` stops a personal multiuser that way)."""
    if args and args != ["unused"]:
        raise BadRequest("finish takes no argument, or 'unused'")
    if args and mu.masters:
        raise RequestError(f"masters are connected: {', '.join(sorted(mu.masters))}")
    return {"text": "Finishing qpy-multiuser.\n", "_after": mu.stop}


def reload_nodes(mu, args: list[str]) -> dict:
    try:
        nodes = nodes_module.load(mu.home / "nodes")
        rules_module.shares(mu.alloc.rules, list(mu.alloc.users),
                            sum(n.cores for n in nodes.values()))
    except (nodes_module.FileError, rules_module.ShareError) as exc:
        raise _refuse(exc) from None
    mu.alloc.set_nodes(mu.monitored(nodes, mu.alloc.nodes))
    drain.apply(mu)
    mu.watch_nodes()
    mu.announce_nodes()
    mu.changed()
    return {"text": f"Nodes loaded: {len(nodes)}.\n"}


def distribute(mu, args: list[str]) -> dict:
    """Reload ``allowed_users``, ``distribution_rules`` and ``limits``: a name taken out
    of the file loses access at once, as with ``removeuser``; then every share is
    computed again."""
    try:
        allowed = nodes_module.load_users(mu.home / "allowed_users")
        rules = rules_module.load(mu.home / "distribution_rules")
        limits = user_limits.load(mu.home / "limits")
        policy = interactive.load(mu.home)
        removed = [user for user in mu.allowed if user not in allowed]
        rules_module.shares(rules, [u for u in mu.alloc.members() if u not in removed],
                            mu.alloc.total_cores)
    except (nodes_module.FileError, rules_module.ShareError) as exc:
        raise _refuse(exc) from None
    mu.allowed = allowed
    mu.policy = policy
    for user in removed:
        mu.revoke(user)
    for user in allowed:
        if user in mu.alloc.users:
            mu.alloc.user(user)  # back from a removal while their jobs still ran
    mu.alloc.set_limits(limits)
    mu.alloc.distribute(rules)
    for user in mu.masters:  # the interactive limits as reloaded
        mu.post_to(user, {"type": "limits", "interactive": policy.public()})
    mu.idle.poke()
    mu.changed()
    keyless = [u for u in allowed if not (mu.home / "keys" / u).exists()]
    text = "Cores distributed.\n"
    if removed:
        text += f"Removed (not in allowed_users any more): {', '.join(removed)}.\n"
    if keyless:
        text += (f"Allowed but without a key yet: {', '.join(keyless)} "
                 "(qpy-admin adduser USER issues one).\n")
    return {"text": text}


def status(mu, args: list[str]) -> dict:
    reply = mu.snapshot()
    return {**reply, "text": status_view.render(reply["users"], reply["nodes"],
                                                reply["sessions"])}


def variables(mu, args: list[str]) -> dict:
    data = {"rules": {"kind": mu.alloc.rules.kind, "minimum": mu.alloc.rules.minimum},
            "total_cores": mu.alloc.total_cores, "allowed_users": mu.allowed,
            "connected": sorted(mu.masters),
            "users": {u.name: {"minimum": u.minimum, "extra": u.extra, "used": u.used,
                               "queue": u.queue, "waiting": u.waiting,
                               "limits": u.caps.public(), "limited": u.limited,
                               "jobs": {str(j): list(v) for j, v in u.jobs.items()},
                               **({"spans": {str(j): [list(p) for p in v]
                                             for j, v in u.spans.items()}} if u.spans else {})}
                      for u in mu.alloc.users.values()},
            "nodes": {n.name: {**n.public(), "used_cores": n.used_cores,
                               "used_mem": n.used_mem} for n in mu.alloc.nodes.values()},
            "messages": mu.messages.entries}
    return {"text": json.dumps(data, indent=2) + "\n", "variables": data}


def save_messages(mu, args: list[str]) -> dict:
    """Keep the last requests served and their replies, for ``variables``; or stop and
    drop them."""
    if len(args) != 1 or args[0].lower() not in ("true", "false"):
        raise BadRequest("saveMessages takes true or false")
    mu.messages.keep(args[0].lower() == "true")
    return {"text": f"Save messages set to {args[0].lower()}.\n"}


def _user_arg(args: list[str], command: str) -> str:
    if len(args) != 1 or not names.is_user_name(args[0]):
        raise BadRequest(f"{command} takes one user name")
    return args[0]


def admit(mu, user: str) -> dict[str, str]:
    """Allow ``user`` and give them their own key (a removed user gets their old one
    back); their bundle, for the admin (``adduser``) or for them (``join``)."""
    keys = paths.ensure_private_dir(mu.home / "keys")
    if not (keys / user).exists():
        paths.write_private(keys / user, paths.new_key() + "\n")
    if user not in mu.allowed:
        with open(mu.home / "allowed_users", "a") as f:
            f.write(f"{user}\n")
        mu.allowed.append(user)
    if user in mu.alloc.users:
        mu.alloc.user(user)  # back from a removal while their jobs still ran
        mu.changed()
    return {"multiuser_connection_address": mu.address,
            "multiuser_connection_port": mu.port(),
            "multiuser_connection_conn_key": (keys / user).read_text().strip()}


def adduser(mu, args: list[str]) -> dict:
    """Allow a user; the bundle goes back to the admin only."""
    user = _user_arg(args, "adduser")
    return {"text": f"User {user} added.\n", "bundle": admit(mu, user)}


def enrol(mu, args: list[str]) -> dict:
    """``enrol USER SECONDS``: allow a user and issue a one-time enrolment code valid
    for SECONDS, with which USER fetches their bundle (``qpy join``)."""
    if len(args) != 2 or not names.is_user_name(args[0]):
        raise BadRequest("enrol takes a user name and the seconds its code is valid")
    try:
        seconds = float(args[1])
    except ValueError:
        seconds = -1.0
    if not 0 < seconds <= 366 * 86400:
        raise BadRequest(f"a code is valid for 1 second to a year, not {args[1]!r}")
    user = args[0]
    admit(mu, user)
    secret = mu.enrolments.issue(user, seconds)
    return {"text": f"User {user} added.\n",
            "code": enrolment.code(mu.address, int(mu.port()), secret)}


def removeuser(mu, args: list[str]) -> dict:
    """Take a user out of ``allowed_users``: every session of theirs ends now and their
    share goes to the others; their key stays on file, so that their master is told
    why it is refused, and ``adduser`` gives access back."""
    user = _user_arg(args, "removeuser")
    if user not in mu.allowed:
        raise NotFound(f"{user} is not an allowed user")
    mu.allowed.remove(user)
    (mu.home / "allowed_users").write_text("".join(f"{u}\n" for u in mu.allowed))
    mu.revoke(user)
    return {"text": f"User {user} removed: their sessions are ended and their share is "
                    "freed.\n"}


def _user(mu, name: str):
    if name not in mu.alloc.users:
        raise NotFound(f"user {name} is not registered")
    return mu.alloc.users[name]


def repair_user(mu, args: list[str]) -> dict:
    """``__user USER``: register a user with no master yet (for its share to count)."""
    name = _user_arg(args, "__user")
    if name not in mu.allowed:
        raise NotFound(f"{name} is not an allowed user")
    mu.alloc.user(name)
    return {"text": f"User {name} registered.\n"}


def repair_req_core(mu, args: list[str]) -> dict:
    """``__req_core USER JOB N_CORES MEM``: grant a slot as if the master had asked."""
    if len(args) < 4:
        raise BadRequest("__req_core takes USER JOBID N_CORES MEM")
    try:
        job, cores, mem = int(args[1]), int(args[2]), float(args[3])
    except ValueError:
        raise BadRequest("__req_core: JOBID and N_CORES must be integers, MEM a number") \
            from None
    user = _user(mu, args[0])
    grants, _ = mu.alloc.request(user, [{"cores": cores, "mem": mem, "attr": None,
                                         "jobs": [job]}], user.queue)
    if not grants:
        raise RequestError("No free cores.")
    mu.ledger.replace(user.name, user.jobs, user.spans)
    return {"text": f"{grants[0]['node']}={grants[0]['address']}\n"}


def repair_remove_job(mu, args: list[str]) -> dict:
    """``__remove_job USER JOB``: drop an allocation the master will never release."""
    if len(args) < 2 or not args[1].isdigit():
        raise BadRequest("__remove_job takes USER JOBID")
    user = _user(mu, args[0])
    if not mu.alloc.remove(user, int(args[1])):
        raise NotFound("Job not found")
    mu.ledger.replace(user.name, user.jobs, user.spans)
    mu.changed()
    return {"text": "Job removed.\n"}


OPS = {"finish": finish, "nodes": reload_nodes, "distribute": distribute, "status": status,
       "variables": variables, "saveMessages": save_messages, "adduser": adduser,
       "enrol": enrol, "drain": drain.drain, "resume": drain.resume,
       "removeuser": removeuser, "__user": repair_user, "__req_core": repair_req_core,
       "__remove_job": repair_remove_job}
