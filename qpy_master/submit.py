"""New jobs: the master's own checks of what arrived, before anything is stored.

The CLI already checked the options and read the script's directives, but the master
trusts no client: resources, directory, attributes and dependencies are checked again
here, and a job that no node could ever run is refused now rather than left waiting
forever. A request is one job, an array's tasks or a bulk file's lines: all are checked
before the first is stored, so a bad one refuses them all.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from qpy import attrs, jobspec, timetext
from qpy.defaults import DEFAULT_UMASK
from qpy.model import Job
from qpy.server import BadRequest, NotFound, RequestError
from qpy.states import LIVE, QUEUE
from qpy.words import plural
from qpy_master.gates import failure


def new_jobs(specs: list[dict], msg: dict, settings: dict,
             nodes: dict[str, dict]) -> list[tuple[Job, dict]]:
    """The queued jobs (IDs 0 until stored) of a request, each with its spec, or
    RequestError naming the spec's line when it has one. Resources are checked once per
    kind asked for: a bulk file of 10,000 lines usually asks for a few."""
    checked: dict[tuple, tuple] = {}
    umask = umask_of(msg)
    jobs = []
    for spec in specs:
        try:
            job = _new_job(spec, msg["cwd"], umask, settings, nodes, checked)
        except RequestError as exc:
            if spec.get("where"):
                raise type(exc)(f"{spec['where']}: {exc}") from None
            raise
        jobs += [(task, spec) for task in array_tasks(job, msg)]
    return jobs


def _resources(spec: dict, settings: dict, nodes: dict[str, dict]) -> tuple:
    """Cores, memory and attributes (with the user's attribute settings), checked, and
    refused if no node could ever run them."""
    try:
        cores, mem, attr = jobspec.check_resources(spec["n_cores"], spec["mem"], spec["attr"])
        attr = attrs.combine(attr, settings["defaultAttr"], settings["andAttr"],
                             settings["orAttr"])
        priority = jobspec.parse_priority(spec.get("priority") or 0, "priority")
    except (jobspec.SpecError, attrs.AttrError) as exc:
        raise BadRequest(str(exc)) from None
    count = _count(spec)
    why = never_fits(nodes.values(), cores, mem, attr) or too_few(nodes.values(), count,
                                                                  cores, mem, attr)
    if why:
        raise RequestError(f"job refused: {why}")
    return cores, mem, attr, priority, count


def _count(spec: dict) -> int:
    """The whole nodes a job takes (``-N``), checked again: 1 unless asked for."""
    try:
        return jobspec.parse_nodes(spec.get("n_nodes") or 1, "n_nodes")
    except jobspec.SpecError as exc:
        raise BadRequest(str(exc)) from None


def _new_job(spec: dict, cwd: str, umask: int, settings: dict, nodes: dict[str, dict],
             checked: dict[tuple, tuple]) -> Job:
    if not os.path.isabs(cwd):
        raise BadRequest(f"the submission directory must be absolute, not {cwd!r}")
    if any("\0" in (text or "") for text in (spec["command"], spec.get("run"), cwd)):
        raise BadRequest("the command or directory contains a NUL character")
    kind = (spec["n_cores"], spec["mem"], spec["attr"], spec.get("priority"),
            spec.get("n_nodes"))
    if kind not in checked:
        checked[kind] = _resources(spec, settings, nodes)
    cores, mem, attr, priority, count = checked[kind]
    afterok = _ids(spec, "afterok")
    return Job(id=0, status=QUEUE, command=spec["command"], cwd=cwd, n_cores=cores, mem=mem,
               attr=attr, t_queue=time.time(), run_command=spec.get("run"),
               requeue=bool(spec.get("requeue")), umask=umask, time_limit=time_limit(spec),
               priority=priority, afterok=afterok,
               after=[i for i in _ids(spec, "after") if i not in afterok],  # the stronger
               mail=_mail(spec), exclusive=bool(spec.get("exclusive")) or count > 1,
               n_nodes=count)


def _mail(spec: dict) -> str | None:
    try:
        return jobspec.parse_mail(spec["mail"], "mail") if spec.get("mail") else None
    except jobspec.SpecError as exc:
        raise BadRequest(str(exc)) from None


def _ids(spec: dict, name: str) -> list[int]:
    ids = sorted(set(spec.get(name) or ()))
    if any(i <= 0 for i in ids):
        raise BadRequest(f"{name}: job IDs start at 1")
    return ids


def array_tasks(job: Job, msg: dict) -> list[Job]:
    """An array request's tasks, one job per index (the first names the array once it is
    stored), or just ``job``."""
    if msg.get("array") is None:
        return [job]
    bounds, cap = msg["array"], msg.get("array_max")
    if len(bounds) != 3:
        raise BadRequest("array must be [first, last, step]")
    first, last, step = bounds
    if not (0 <= first <= last < 2 ** 31 and step >= 1 and (cap is None or cap >= 1)):
        raise BadRequest(f"bad array {first}-{last}:{step}%{cap}")
    indices = range(first, last + 1, step)
    if len(indices) > jobspec.MAX_TASKS:
        raise BadRequest(f"an array makes at most {jobspec.MAX_TASKS:,} tasks")
    return [dataclasses.replace(job, array_index=i, array_max=cap, after=list(job.after),
                                afterok=list(job.afterok)) for i in indices]


def dependencies(jobs: list[tuple[Job, str | None]],
                 find: Callable[[list[int]], dict[int, Job]]) -> dict[int, str]:
    """Refuse dependencies on jobs that do not exist (unknown or cleaned), naming the
    ID (and the line, ``where``); return, by job index, why a job can never run because
    an ``afterok`` dependency already ended otherwise than done with exit 0 (it is then
    undone at once)."""
    wanted = sorted({dep for job, _ in jobs for dep in (*job.after, *job.afterok)})
    found = find(wanted) if wanted else {}
    failed = {}
    for index, (job, where) in enumerate(jobs):
        for dep in (*job.after, *job.afterok):
            if dep not in found:
                text = f"dependency {dep} is not a job of yours (unknown or cleaned)"
                raise NotFound(f"{where}: {text}" if where else text)
        for dep in job.afterok:
            why = failure(found[dep]) if found[dep].status not in LIVE else None
            if why is not None:
                failed[index] = why
                break
    return failed


def time_limit(spec: dict) -> int | None:
    """The wall-time limit in seconds (None: none), checked again."""
    limit = spec.get("time_limit")
    if limit is not None and not 0 < limit <= timetext.MAX_LIMIT:
        raise BadRequest(f"time_limit must be 1 to {timetext.MAX_LIMIT} seconds, or null "
                         f"for none, not {limit}")
    return limit or None


def umask_of(msg: dict) -> int:
    """The submitter's umask, for the jobs and their output files (absent: 022)."""
    umask = DEFAULT_UMASK if msg.get("umask") is None else msg["umask"]
    if not 0 <= umask <= 0o777:
        raise BadRequest(f"the umask must be between 0 and 0o777, not {umask:#o}")
    return umask


def never_fits(nodes, cores: int, mem: float, attr: str | None) -> str | None:
    """Why no node could ever run this request, or None if one could (or we can't tell)."""
    nodes = list(nodes)
    if not nodes:
        return None
    matching = attrs.matching(nodes, attr)
    if not matching:
        return f"no node has the attributes {attr}"
    if any(not n["cores"] or (cores <= n["cores"] and mem <= (n["mem"] or mem))
           for n in matching):
        return None  # fits, or a node whose size is not known yet might fit
    best = max(matching, key=lambda n: (n["cores"], n["mem"]))
    return (f"no node can ever run it: it asks for {plural(cores, 'core')} and {mem:g} GB, the "
            f"largest node ({best['name']}) has {plural(best['cores'], 'core')} and "
            f"{best['mem']:g} GB")


def too_few(nodes, count: int, cores: int, mem: float, attr: str | None) -> str | None:
    """Why a job of ``count`` whole nodes can never run: the cluster (as the multiuser
    last described it) has fewer nodes that match and are large enough; None if it has
    enough, or if nothing is known yet."""
    nodes = list(nodes)
    if count <= 1 or not nodes:
        return None
    fit = [n["name"] for n in attrs.matching(nodes, attr)
           if not n["cores"] or (cores <= n["cores"] and mem <= (n["mem"] or mem))]
    if len(fit) >= count:
        return None
    have = ", ".join(sorted(fit)) if fit else "none"
    return (f"it asks for {count} whole nodes, the cluster has {len(fit)} that "
            f"{'fits' if len(fit) == 1 else 'fit'} it ({have})")


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
