"""Submitting, listing, killing and forgetting jobs: sub, check, kill, clean."""

from __future__ import annotations

import click

from qpy.client import ClientError
from qpy.commands.common import CONTEXT, echo, fail, parse_selection, request, say
from qpy.commands.sub_queue import bulk_specs, queue_options, read_file, request_fields, show
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
@click.option("--mail", "mail", metavar="WHEN",
              help="Mail me at the job's end: end, fail or end,fail (through sendmail).")
@click.option("--exclusive", "exclusive", is_flag=True, default=None,
              help="Take a whole node: all its cores and memory, no other job beside.")
@click.option("-N", "--nodes", "nodes", metavar="K",
              help="Take K whole nodes; the command runs on the first, with QPY_NODES and "
                   "QPY_NODEFILE.")
@queue_options
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def sub(ctx: click.Context, command: tuple[str, ...], **params: object) -> None:
    """Submit COMMAND as a job. Options go before the command."""
    inv = current()
    if params["file"] is not None:
        if command:
            fail("give a command or --file, not both")
        if params["array"] is not None:
            fail("--array and --file cannot be used together")
        text, name = read_file(params["file"])
        specs = bulk_specs(ctx, text, name, _spec)
        reply = request({"type": "bulk", "jobs": specs, "cwd": inv.cwd, "env": inv.env,
                         "umask": inv.umask, "records": bool(params["as_json"])})
    else:
        if not command:
            fail("no command given to qpy sub")
        spec = _spec({**params, "command": command}, None)
        reply = request({"type": "sub", **spec, **request_fields(params), "env": inv.env,
                         "umask": inv.umask})
    show(reply, bool(params["as_json"]))


def _spec(params: dict, where: str | None) -> dict:
    """One job's ``sub`` request fields from the options (of the command line, or of a
    line of a bulk file, which ``where`` names in errors)."""
    from qpy import jobspec

    prefix = f"{where}: " if where else ""
    if params["copy_flag"] and params["original_flag"]:
        fail(f"{prefix}-c (copy the script) and -o (run the original) cannot be used "
             "together")
    copy = True if params["copy_flag"] else False if params["original_flag"] else None
    try:
        return jobspec.build(list(params["command"]), current().cwd, params["n_cores"],
                             params["mem"], params["attr"], copy, params["requeue"],
                             params["time"], params["mail"], params["exclusive"],
                             after=params["after"], afterok=params["afterok"],
                             priority=params["priority"], nodes=params["nodes"])
    except jobspec.SpecError as exc:
        fail(f"{prefix}{exc}")


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
    if reply.get("limit"):
        echo(f"Queued jobs are held back by the {reply['limit']}.\n")


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
