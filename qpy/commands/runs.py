"""Runs, ends and waiting: requeue, wait, history, log.

``wait`` and ``log`` run in the user's own process (they block until jobs end and must
outlive a restart of the master: ``qpy/follow.py``); ``requeue`` and ``history`` run
wherever the command runs.
"""

from __future__ import annotations

import click

from qpy.client import ClientError
from qpy.commands.common import CONTEXT, echo, fail, parse_selection, request, say
from qpy.invocation import current
from qpy.states import FINISHED, STATUSES
from qpy.words import plural

RUN_STATUSES = ("running", "done", "killed", "lost")  # a run never ends undone


@click.command(context_settings=CONTEXT)
@click.argument("jobs", nargs=-1)
def requeue(jobs: tuple[str, ...]) -> None:
    """Run finished jobs again under the same IDs: IDs, ranges, done, killed, undone, lost,
    directories or 'all'."""
    say(request({"type": "requeue", "select": parse_selection(jobs, FINISHED, "requeue")}))


@click.command(context_settings=CONTEXT)
@click.option("--timeout", type=float, metavar="S",
              help="Give up after S seconds (exit status 2); the jobs go on.")
@click.argument("jobs", nargs=-1)
def wait(timeout: float | None, jobs: tuple[str, ...]) -> None:
    """Wait until jobs have ended; print each that did not end done with exit 0."""
    inv = current()
    inv.local_only()
    if timeout is not None and not 0 <= timeout < float("inf"):
        fail(f"--timeout must be a number of seconds >= 0, not {timeout:g}")
    from qpy import follow

    sel = parse_selection(jobs, STATUSES, "wait")
    waited = follow.wait_jobs(inv.request, sel, timeout)
    for job in waited.failed():
        echo(follow.outcome(job) + "\n")
    for job_id in waited.gone:
        echo(f"job {job_id} was cleaned before its end was seen\n")
    if waited.pending:
        count = len(waited.pending)
        inv.err.write(f"qpy: timed out after {timeout:g} s: {plural(count)} "
                      "not ended yet\n")
        raise click.exceptions.Exit(2)
    if waited.failed() or waited.gone:
        raise click.exceptions.Exit(1)


@click.command(context_settings=CONTEXT)
@click.option("--since", metavar="WHEN", help="Runs that ended at or after WHEN: an ISO "
              "date or time, or a span back from now (2h, 3d).")
@click.option("--until", metavar="WHEN", help="Runs that started at or before WHEN.")
@click.option("--json", "as_json", is_flag=True, help="Print the runs as JSON.")
@click.argument("jobs", nargs=-1)
def history(since: str | None, until: str | None, as_json: bool,
            jobs: tuple[str, ...]) -> None:
    """List every run of every job, cleaned ones too: times, node, resources, exit, usage."""
    import time

    from qpy import timetext

    now = time.time()
    msg: dict = {"type": "history",
                 "select": parse_selection(jobs, RUN_STATUSES, "history") if jobs else {}}
    try:
        for name, text in (("since", since), ("until", until)):
            if text is not None:
                msg[name] = timetext.parse_when(text, now, f"--{name}")
    except timetext.TimeError as exc:
        fail(str(exc))
    if as_json:
        from qpy import jsonout

        msg["json"] = True
        echo(jsonout.document_of("runs", request(msg)["runs_json"]))
        return
    echo(request(msg)["table"])


@click.command(context_settings=CONTEXT)
@click.option("--err", "err", is_flag=True, help="Standard error (job_ID.err) instead.")
@click.option("-n", "--lines", type=int, metavar="N", help="Only the last N lines.")
@click.option("-f", "--follow", "follow_flag", is_flag=True,
              help="Follow the output as it is written until the job ends.")
@click.argument("job")
def log(err: bool, lines: int | None, follow_flag: bool, job: str) -> None:
    """Print a job's output; with -f, follow it until the job ends."""
    inv = current()
    inv.local_only()
    if not job.isdigit() or int(job) < 1:
        fail(f"log takes one job ID, not {job!r}")
    if lines is not None and lines < 0:
        fail(f"-n must be 0 or more lines, not {lines}")
    import os
    import threading

    from qpy import follow

    found = inv.request({"type": "check", "select": {"ids": [int(job)]}})["jobs"]
    if not found:
        raise ClientError(f"job {job} not found", "not_found")
    path = os.path.join(found[0]["cwd"], f"job_{job}.{'err' if err else 'out'}")
    offset = follow.tail_offset(path, lines)
    if not follow_flag:
        if not os.path.exists(path):
            raise ClientError(f"job {job} ({found[0]['status']}) has no output file {path}")
        follow.copy_new(path, inv.out, offset)
        return
    done, waited = threading.Event(), []

    def watch() -> None:
        try:
            waited.append(follow.wait_jobs(inv.request, {"ids": [int(job)]}, None))
        except ClientError as exc:
            waited.append(exc)
        done.set()

    threading.Thread(target=watch, name="wait", daemon=True).start()
    follow.follow(path, inv.out, offset, done)
    if isinstance(waited[0], ClientError):
        raise waited[0]
    ended = waited[0].ended.get(int(job))
    inv.err.write((follow.outcome(ended) if ended else f"job {job} was cleaned") + "\n")
    if ended is None or not follow.succeeded(ended):
        raise click.exceptions.Exit(1)
