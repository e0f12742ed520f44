"""The manual and the completion script's helper: tutorial, _complete."""

from __future__ import annotations

import click

from qpy.client import ClientError
from qpy.commands.common import CONTEXT, echo
from qpy.invocation import current


@click.command(context_settings=CONTEXT)
@click.argument("keyword", required=False)
def tutorial(keyword: str | None) -> None:
    """Show the manual, at the first place KEYWORD appears."""
    current().local_only()  # a pager on the user's terminal
    from qpy import tutorial as tutorial_module

    try:
        tutorial_module.show(keyword)
    except tutorial_module.TutorialError as exc:
        raise ClientError(str(exc), "not_found") from None


@click.command(name="_complete", hidden=True, context_settings=CONTEXT)
@click.argument("what")
@click.argument("args", nargs=-1)
def complete(what: str, args: tuple[str, ...]) -> None:
    """For bash_completion.sh: 'ids [STATUS...]' prints the job IDs of a running master."""
    from qpy import completion

    inv = current()
    echo(completion.candidates(what, args, inv.request if inv.served else None))
