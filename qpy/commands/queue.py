"""The order and flow of the queue: ctrlQueue, hold, release, why."""

from __future__ import annotations

import click

from qpy.commands.common import CONTEXT, echo, fail, parse_id, parse_selection, request, say


@click.command(name="ctrlQueue", context_settings={**CONTEXT, "ignore_unknown_options": True})
@click.argument("action", type=click.Choice(["pause", "continue", "jump"]))
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def ctrl_queue(action: str, args: tuple[str, ...]) -> None:
    """Pause or continue the queue, or jump jobs to run after TARGET (ID, begin, end)."""
    if action != "jump":
        if args:
            fail(f"ctrlQueue {action} takes no arguments")
        say(request({"type": "ctrl", "action": action}))
        return
    if len(args) < 2:
        fail("ctrlQueue jump needs job IDs and a target: a job ID, begin or end")
    target = args[-1]
    if target not in ("begin", "end"):
        if not target.isdigit():
            fail(f"jump target must be a job ID, begin or end, not {target!r}")
        parse_id(target, "jump")
    sel = parse_selection(args[:-1], (), "jump", allow_dirs=False)
    say(request({"type": "ctrl", "action": "jump", "select": sel, "target": target}))


@click.command(context_settings=CONTEXT)
@click.argument("jobs", nargs=-1)
def hold(jobs: tuple[str, ...]) -> None:
    """Keep queued jobs from starting: IDs, ranges, 'queue', directories or 'all'."""
    sel = parse_selection(jobs, ("queue",), "hold")
    say(request({"type": "hold", "select": sel, "held": True}))


@click.command(context_settings=CONTEXT)
@click.argument("jobs", nargs=-1)
def release(jobs: tuple[str, ...]) -> None:
    """Let held jobs start: IDs, ranges, 'held', 'queue', directories or 'all'."""
    sel = parse_selection(jobs, ("queue",), "release")
    say(request({"type": "hold", "select": sel, "held": False}))


@click.command(context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Print the reason as JSON.")
@click.argument("job")
def why(as_json: bool, job: str) -> None:
    """Say why queued job JOB has not started yet, or where a job is."""
    reply = request({"type": "why", "job": parse_id(job, "why")})
    if as_json:
        from qpy import jsonout

        echo(jsonout.document(job=reply["job"], status=reply["status"],
                              reason=reply["reason"], text=reply["text"].rstrip("\n"),
                              details=reply["details"]))
    else:
        say(reply)
