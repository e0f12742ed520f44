"""The user's settings and notes: config, notes."""

from __future__ import annotations

import click

from qpy.commands.common import CONTEXT, parse_id, request, say
from qpy.invocation import current


@click.command(context_settings={**CONTEXT, "ignore_unknown_options": True})
@click.argument("key", required=False)
@click.argument("values", nargs=-1, type=click.UNPROCESSED)
def config(key: str | None, values: tuple[str, ...]) -> None:
    """Show the settings, or set KEY to VALUES."""
    if key == "sourceTheseFiles":
        values = _absolute(values)
    say(request({"type": "config", "key": key, "values": list(values)}))


def _absolute(files: tuple[str, ...]) -> tuple[str, ...]:
    """Files named from here, for the master, which has no working directory of ours."""
    import os

    from qpy import config

    if config.is_none(list(files)):
        return files
    inv = current()
    home = inv.env.get("HOME", "~")

    def expand(name: str) -> str:  # '~/x' quoted, so the shell left it alone
        return home + name[1:] if name == "~" or name.startswith("~/") else name

    return tuple(os.path.normpath(os.path.join(inv.cwd, expand(f))) for f in files)


@click.command(context_settings=CONTEXT)
@click.argument("job", required=False)
@click.argument("text", nargs=-1)
def notes(job: str | None, text: tuple[str, ...]) -> None:
    """List jobs with notes, show a job's notes, or add TEXT as a note."""
    say(request({"type": "notes", "job": parse_id(job, "notes") if job is not None else None,
                 "text": " ".join(text) if text else None}))
