"""Submitting, listing, killing and forgetting jobs: sub, check, kill, clean."""

from __future__ import annotations

import click

from qpy.client import ClientError
from qpy.commands.common import CONTEXT, echo, fail, parse_selection, request, say
from qpy.invocation import current
from qpy.states import FINISHED, STATUSES


@click.command(context_settings={**CONTEXT, "allow_interspersed_args": False,
                                 "ignore_unknown_options": False})
@click.option("-n", "--cores", "n_cores", metavar="N", help="Number of cores (default 1).")
@click.option("-m", "--mem", "--memory", "mem", metavar="GB", help="Memory in GB (default 5).")
@click.option("-a", "--node_attr", "--attributes", "attr", metavar="EXPR",
              help="Node attributes: names with and/or/not and parentheses.")
@click.option("-c", "--copyScript", "copy_flag", is_flag=True,
              help="Run a copy of the script taken now.")
@click.option("-o", "--originalScript", "original_flag", is_flag=True,
              help="Run the original script even if copyScripts is on.")
@click.option("--requeue", "requeue", is_flag=True, default=None,
              help="Queue the job again if its node fails while it runs (else: lost).")
@click.option("-t", "--time", "time", metavar="TIME",
              help="Wall-time limit: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S; 0 or UNLIMITED: "
                   "none.")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def sub(n_cores: str | None, mem: str | None, attr: str | None, copy_flag: bool,
        original_flag: bool, requeue: bool | None, time: str | None,
        command: tuple[str, ...]) -> None:
    """Submit COMMAND as a job. Options go before the command."""
    from qpy import jobspec

    if copy_flag and original_flag:
        fail("-c (copy the script) and -o (run the original) cannot be used together")
    copy = True if copy_flag else False if original_flag else None
    inv = current()
    try:
        spec = jobspec.build(list(command), inv.cwd, n_cores, mem, attr, copy, requeue, time)
    except jobspec.SpecError as exc:
        fail(str(exc))
    say(request({"type": "sub", **spec, "env": inv.env, "umask": inv.umask}))


@click.command(context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Print the records as JSON.")
@click.argument("jobs", nargs=-1)
def check(as_json: bool, jobs: tuple[str, ...]) -> None:
    """List jobs: all, or those matching statuses, IDs, ranges or directories."""
    import time

    sel = parse_selection(jobs, STATUSES, "check") if jobs else {}
    reply = request({"type": "check", "select": sel})
    if jobs and not reply["jobs"]:
        raise ClientError(f"no job matches {' '.join(jobs)}", "not_found")
    if as_json:
        from qpy import jsonout

        echo(jsonout.document(jobs=[jsonout.job(j) for j in reply["jobs"]]))
        return
    from qpy import render

    scheme = reply["scheme"] if reply.get("colour") and current().tty else None
    echo(render.render_jobs(reply["jobs"], reply["fmt"], scheme, time.time()))
    if reply.get("paused"):
        echo("Job submission is paused.\n")


@click.command(context_settings=CONTEXT)
@click.argument("jobs", nargs=-1)
def kill(jobs: tuple[str, ...]) -> None:
    """Kill jobs: IDs, ranges, 'queue', 'running' or 'all'."""
    say(request({"type": "kill", "select": parse_selection(jobs, ("queue", "running"), "kill")}))


@click.command(context_settings=CONTEXT)
@click.argument("jobs", nargs=-1)
def clean(jobs: tuple[str, ...]) -> None:
    """Forget finished jobs: IDs, ranges, done, killed, undone, lost, directories or 'all'."""
    sel = parse_selection(jobs, FINISHED, "clean")
    say(request({"type": "clean", "select": sel}))
