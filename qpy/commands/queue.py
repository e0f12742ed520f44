"""The order and flow of the queue: ctrlQueue."""

from __future__ import annotations

import click

from qpy.commands.common import CONTEXT, fail, parse_id, parse_selection, request, say


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
