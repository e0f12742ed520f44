"""A new job: the master's own checks of what arrived, then one stored record.

The CLI already checked the options and read the script's directives, but the master
trusts no client: resources, directory and attributes are checked again here, and a job
that no node could ever run is refused now rather than left waiting forever.
"""

from __future__ import annotations

import os
import shlex
import shutil
import time
from pathlib import Path

from qpy import attrs, jobspec, timetext
from qpy.defaults import DEFAULT_UMASK
from qpy.model import Job
from qpy.server import BadRequest, RequestError
from qpy.states import QUEUE


def new_job(msg: dict, settings: dict, nodes: dict[str, dict]) -> Job:
    """A queued job (ID 0 until stored) from a ``sub`` request, or RequestError."""
    try:
        cores, mem, attr = jobspec.check_resources(msg["n_cores"], msg["mem"], msg["attr"])
        attr = attrs.combine(attr, settings["defaultAttr"], settings["andAttr"],
                             settings["orAttr"])
    except (jobspec.SpecError, attrs.AttrError) as exc:
        raise BadRequest(str(exc)) from None
    limit = time_limit(msg)
    cwd = msg["cwd"]
    if not os.path.isabs(cwd):
        raise BadRequest(f"the submission directory must be absolute, not {cwd!r}")
    if any("\0" in (text or "") for text in (msg["command"], msg.get("run"), cwd)):
        raise BadRequest("the command or directory contains a NUL character")
    umask = DEFAULT_UMASK if msg.get("umask") is None else msg["umask"]
    if not 0 <= umask <= 0o777:
        raise BadRequest(f"the umask must be between 0 and 0o777, not {umask:#o}")
    why = never_fits(nodes.values(), cores, mem, attr)
    if why:
        raise RequestError(f"job refused: {why}")
    return Job(id=0, status=QUEUE, command=msg["command"], cwd=cwd, n_cores=cores, mem=mem,
               attr=attr, t_queue=time.time(), run_command=msg.get("run"),
               requeue=bool(msg.get("requeue")), umask=umask, time_limit=limit)


def time_limit(msg: dict) -> int | None:
    """The wall-time limit in seconds (None: none), checked again."""
    limit = msg.get("time_limit")
    if limit is not None and not 0 < limit <= timetext.MAX_LIMIT:
        raise BadRequest(f"time_limit must be 1 to {timetext.MAX_LIMIT} seconds, or null "
                         f"for none, not {limit}")
    return limit or None


def _cores(n: int) -> str:
    return f"{n} core{'' if n == 1 else 's'}"


def never_fits(nodes, cores: int, mem: float, attr: str | None) -> str | None:
    """Why no node could ever run this request, or None if one could (or we can't tell)."""
    nodes = list(nodes)
    if not nodes:
        return None
    expr = attrs.compile_expr(attr) if attr else None
    matching = [n for n in nodes
                if expr is None or expr.matches(frozenset(n.get("attrs", ())), n["name"])]
    if not matching:
        return f"no node has the attributes {attr}"
    if any(not n["cores"] or (cores <= n["cores"] and mem <= (n["mem"] or mem))
           for n in matching):
        return None  # fits, or a node whose size is not known yet might fit
    best = max(matching, key=lambda n: (n["cores"], n["mem"]))
    return (f"no node can ever run it: it asks for {_cores(cores)} and {mem:g} GB, the "
            f"largest node ({best['name']}) has {_cores(best['cores'])} and "
            f"{best['mem']:g} GB")


def copy_script(scripts: Path, job: Job, argv: list[str], index: int) -> dict[str, str]:
    """Keep a private copy of the job's script, run instead of the original; the fields
    that change on the job."""
    scripts.mkdir(mode=0o700, exist_ok=True)
    target = scripts / f"job_script.{job.id}"
    shutil.copyfile(argv[index] if os.path.isabs(argv[index])
                    else os.path.join(job.cwd, argv[index]), target)
    target.chmod(0o700)
    words = list(argv)
    words[index] = str(target)
    return {"script_copy": str(target), "run_command": "exec " + shlex.join(words)}
